module example.com/hotswap-go

go 1.19
