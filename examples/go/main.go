// An HTTP server in Go, standard library only, written for hotswap:
//
//	go build -o server . && hotswap --listen 127.0.0.1:8080 -- ./server
//
// Go programs are statically linked and bypass libc, so hotswap's bind()
// shim cannot hand them its socket: the server takes it from fd 3 (systemd's
// LISTEN_FDS protocol) with net.FileListener, says READY=1 on NOTIFY_SOCKET
// once it serves, and drains on SIGTERM without losing a request (drain).
// Outside hotswap it listens on 127.0.0.1:8080 itself.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// draining is set at SIGTERM: answers then carry `Connection: close`.
var draining atomic.Bool

// drain stops the server without losing a request. http.Server.Shutdown
// alone closes idle keep-alive connections at once, and a client that is
// sending its next request on one at that moment sees it closed. So: stop
// accepting first, let clients on open connections get one more answer,
// with `Connection: close`, then Shutdown closes what stayed idle and waits
// for the requests in flight.
func drain(server *http.Server, ln net.Listener) {
	draining.Store(true)
	ln.Close()
	time.Sleep(200 * time.Millisecond)
	if err := server.Shutdown(context.Background()); err != nil {
		log.Printf("shutdown: %v", err)
	}
}

// listener returns the socket passed as fd 3 when LISTEN_PID names this
// process (what sd_listen_fds checks), else a socket of its own.
func listener() (net.Listener, error) {
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) {
		if n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS")); n >= 1 {
			f := os.NewFile(3, "listen-fd-3")
			defer f.Close() // FileListener holds a duplicate
			return net.FileListener(f)
		}
	}
	return net.Listen("tcp", "127.0.0.1:8080")
}

// notify sends state to the NOTIFY_SOCKET datagram socket, as sd_notify(3)
// does; it does nothing when there is none.
func notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

func main() {
	log.SetPrefix(fmt.Sprintf("go[%d]: ", os.Getpid()))
	log.SetFlags(0)
	gen := os.Getenv("HOTSWAP_GENERATION")
	if gen == "" {
		gen = "0"
	}
	pid := strconv.Itoa(os.Getpid())

	ln, err := listener()
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Generation", gen)
		if draining.Load() {
			w.Header().Set("Connection", "close")
		}
		fmt.Fprintf(w, "pid=%s gen=%s runtime=go\n", pid, gen)
	})}

	stopped := make(chan struct{})
	go func() {
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
		<-term
		log.Print("draining")
		drain(server, ln)
		close(stopped)
	}()

	log.Printf("gen %s serving on %s", gen, ln.Addr())
	if err := notify("READY=1"); err != nil {
		log.Printf("notify: %v", err)
	}
	// Serve returns once drain closed the listener.
	if err := server.Serve(ln); !draining.Load() {
		log.Fatalf("serve: %v", err)
	}
	<-stopped
	log.Print("drained, exiting")
}
