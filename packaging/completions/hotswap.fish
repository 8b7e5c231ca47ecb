# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_hotswap_global_optspecs
    string join \n l/listen= name= n/instances= ready= ready-timeout= stop-signal= drain-timeout= balance= watch= rolling watchdog= max-memory= restart= chdir= env-file= user= group= log-format= pid-file= control= backlog= reuse-port intercept-bind= socket-mode= h/help V/version
end

function __fish_hotswap_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_hotswap_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_hotswap_using_subcommand
    set -l cmd (__fish_hotswap_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c hotswap -n "__fish_hotswap_needs_command" -s l -l listen -d 'A socket to own, passed as fd 3, 4, … in order: PORT, :PORT, HOST:PORT, [IPv6]:PORT, tcp://…, udp://…, unix:/PATH, unix:@NAME; NAME= sets its LISTEN_FDNAMES name' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l name -d 'Names this service for `reload`, `status`, `list` and in logs [default: the program\'s file name; for an interpreter or launcher, its script\'s or project\'s: `node api.js` is `api`, `npm start` the package.json name]' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -s n -l instances -d 'Children per generation, all sharing the sockets (HOTSWAP_INSTANCE 0..N-1)' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l ready -d 'How a child says it is ready: auto, notify, fd, ipc, delay:DUR, exec:CMD' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l ready-timeout -d 'A new generation not ready by then is rolled back' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l stop-signal -d 'Sent to a retiring child' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l drain-timeout -d 'Then SIGKILL to the retiring child\'s process group' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l balance -d 'How instances share a socket: shared (one socket, the first to accept wins) or reuseport (one SO_REUSEPORT socket per instance slot; the kernel spreads connections)' -r -f -a "shared\t''
reuseport\t''"
complete -c hotswap -n "__fish_hotswap_needs_command" -l watch -d 'Reload when a file under PATH changes (debounced; .git, target and node_modules are ignored). Repeatable' -r -F
complete -c hotswap -n "__fish_hotswap_needs_command" -l watchdog -d 'A child that sent WATCHDOG=1 once must send it at least this often, else it is replaced (it gets WATCHDOG_USEC), as systemd\'s WatchdogSec=' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l max-memory -d 'An instance whose process tree\'s resident memory exceeds SIZE (500M, 1G) is replaced: a new one starts, then the old one drains' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l restart -d 'What to do when a child of the serving generation exits' -r -f -a "on-failure\t''
always\t''
never\t''"
complete -c hotswap -n "__fish_hotswap_needs_command" -l chdir -d 'The children\'s working directory, resolved anew for every generation [default: $PWD]' -r -F
complete -c hotswap -n "__fish_hotswap_needs_command" -l env-file -d 'KEY=VALUE lines (# comments, blank lines, one pair of quotes stripped) added to the children\'s environment, read anew for every generation' -r -F
complete -c hotswap -n "__fish_hotswap_needs_command" -l user -d 'Run the children as this user (name or uid), with its groups; hotswap binds first' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l group -d 'Run the children with this group (name or gid) and no other' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l log-format -d 'hotswap\'s own log lines: human, or json (one object per line)' -r -f -a "human\t'`hotswap[PID]: message`'
json\t'One JSON object per line'"
complete -c hotswap -n "__fish_hotswap_needs_command" -l pid-file -d 'Write hotswap\'s pid here (atomically); removed on exit' -r -F
complete -c hotswap -n "__fish_hotswap_needs_command" -l control -d 'The control socket [default: $XDG_RUNTIME_DIR/hotswap/NAME.sock, /run/hotswap/NAME.sock as root]' -r -F
complete -c hotswap -n "__fish_hotswap_needs_command" -l backlog -d 'Listen backlog [default: net.core.somaxconn]' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l intercept-bind -d 'Preload hotswap\'s bind() shim into the children, so that an app which binds its own port gets hotswap\'s socket for it: on or off' -r -f -a "on\t''
off\t''"
complete -c hotswap -n "__fish_hotswap_needs_command" -l socket-mode -d 'chmod for unix socket files, in octal [default: 0666 & ~umask]' -r
complete -c hotswap -n "__fish_hotswap_needs_command" -l rolling -d 'Replace instances one at a time (new i ready, then old i retires) instead of the whole generation at once. A failure stops the rollout where it is'
complete -c hotswap -n "__fish_hotswap_needs_command" -l reuse-port -d 'Set SO_REUSEPORT on the sockets hotswap binds'
complete -c hotswap -n "__fish_hotswap_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hotswap -n "__fish_hotswap_needs_command" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_needs_command" -a "reload" -d 'Reload a running hotswap: start a new generation, retire the old one'
complete -c hotswap -n "__fish_hotswap_needs_command" -a "rollback" -d 'Start a generation from what the previous serving generation ran (its release directory, program and env file), with a reload\'s readiness and report'
complete -c hotswap -n "__fish_hotswap_needs_command" -a "status" -d 'Show a running hotswap\'s generations, children and last reload'
complete -c hotswap -n "__fish_hotswap_needs_command" -a "list" -d 'List every running hotswap of this user: name, pid, generation, children, uptime, last reload'
complete -c hotswap -n "__fish_hotswap_needs_command" -a "completions" -d 'Print the completion script for SHELL on stdout (`hotswap completions bash > /etc/bash_completion.d/hotswap`)'
complete -c hotswap -n "__fish_hotswap_needs_command" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hotswap -n "__fish_hotswap_using_subcommand reload" -l control -d 'Its control socket' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand reload" -l pid-file -d 'The file its --pid-file wrote: the hotswap of that pid, wherever its control socket is' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand reload" -l timeout -d 'With --wait: give up waiting after this long (exit 3; the reload goes on)' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand reload" -l wait -d 'Wait for the outcome, printing each step; exit 0 when the new generation took over'
complete -c hotswap -n "__fish_hotswap_using_subcommand reload" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand rollback" -l control -d 'Its control socket' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand rollback" -l pid-file -d 'The file its --pid-file wrote: the hotswap of that pid, wherever its control socket is' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand rollback" -l timeout -d 'With --wait: give up waiting after this long (exit 3; the reload goes on)' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand rollback" -l wait -d 'Wait for the outcome, printing each step; exit 0 when the new generation took over'
complete -c hotswap -n "__fish_hotswap_using_subcommand rollback" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand status" -l control -d 'Its control socket' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand status" -l pid-file -d 'The file its --pid-file wrote: the hotswap of that pid, wherever its control socket is' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand status" -l json -d 'Print the stable JSON form'
complete -c hotswap -n "__fish_hotswap_using_subcommand status" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand list" -l json -d 'Print a JSON array of the services\' statuses (each as `hotswap status --json` prints it)'
complete -c hotswap -n "__fish_hotswap_using_subcommand list" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand completions" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from reload rollback status list completions help" -f -a "reload" -d 'Reload a running hotswap: start a new generation, retire the old one'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from reload rollback status list completions help" -f -a "rollback" -d 'Start a generation from what the previous serving generation ran (its release directory, program and env file), with a reload\'s readiness and report'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from reload rollback status list completions help" -f -a "status" -d 'Show a running hotswap\'s generations, children and last reload'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from reload rollback status list completions help" -f -a "list" -d 'List every running hotswap of this user: name, pid, generation, children, uptime, last reload'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from reload rollback status list completions help" -f -a "completions" -d 'Print the completion script for SHELL on stdout (`hotswap completions bash > /etc/bash_completion.d/hotswap`)'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from reload rollback status list completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
