#!/bin/sh
# rollback.sh: back out a release that passed readiness but is bad.
#
#   rollback.sh --root /srv/app --name app
#
# Runs `hotswap rollback NAME --wait` (a new generation from the release the
# previous serving generation ran), then points `current` at the release that
# serves now, as `hotswap status NAME --json` reports it, and `previous` at the
# one it replaced: a later restart or reload of hotswap runs the same release.
# Run it again to go forward again. When hotswap is not running, it only swaps
# `current` and `previous`.
#
# Exit status: 0 the previous release serves and `current` points at it;
# 1 hotswap refused or the rollback failed readiness (`current` untouched), or
# the serving release is not under ROOT/releases; 2 usage. hotswap is run as
# ${HOTSWAP:-hotswap}; with HOTSWAP_CONTROL set, that control socket is used
# instead of the NAME's.
set -eu
LC_ALL=C
export LC_ALL

HOTSWAP=${HOTSWAP:-hotswap}
root=
name=

say() { echo "rollback: $*"; }
fail() {
    echo "rollback: $*" >&2
    exit 1
}
usage() {
    echo "usage: rollback.sh --root DIR --name NAME" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --root) [ $# -ge 2 ] || usage; root=$2; shift 2 ;;
    --name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -eu/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "rollback: unexpected argument $1" >&2; usage ;;
    esac
done
if [ -z "$root" ] || [ -z "$name" ]; then usage; fi
[ -d "$root/releases" ] || fail "$root/releases is not a directory"
root=$(cd "$root" && pwd)
releases=$root/releases
current=$root/current

lock=$root/.deploy.lock
mkdir "$lock" 2>/dev/null ||
    fail "$lock exists: another deploy or rollback is running (if none is, remove it)"
trap 'rmdir "$lock" 2>/dev/null || :' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# As in deploy.sh: a new link under a temporary name, renamed over the old one.
swap_link() {
    tmp=$2.tmp.$$
    if ln -sfn "$1" "$tmp" && mv -T "$tmp" "$2"; then
        return 0
    fi
    rm -f "$tmp"
    return 1
}

# Reads `hotswap status --json` on stdin and prints the serving generation's
# `release`: the JSON is flattened into paths (.generation,
# .generations[0].release, ...) by a small parser, so that no jq is needed.
serving_release() {
    awk '
    { text = text $0 "\n" }
    function path_here(d) {
        return kind[d] == "o" ? prefix[d] "." key[d] : prefix[d] "[" index_[d] "]"
    }
    function done_value(d) {
        if (kind[d] == "a") index_[d]++; else want_key[d] = 1
    }
    function open_(k) {
        p = depth > 0 ? path_here(depth) : ""
        depth++
        kind[depth] = k; prefix[depth] = p; index_[depth] = 0; want_key[depth] = 1
    }
    function string_(   out, c, e) {
        out = ""
        i++
        while (i <= n) {
            c = substr(text, i, 1)
            if (c == "\"") { i++; return out }
            if (c == "\\") {
                e = substr(text, i + 1, 1)
                i += 2
                if (e == "n") out = out "\n"
                else if (e == "t") out = out "\t"
                else if (e == "u") { out = out "\\u" substr(text, i, 4); i += 4 }
                else out = out e
                continue
            }
            out = out c
            i++
        }
        return out
    }
    END {
        n = length(text); i = 1; depth = 0
        while (i <= n) {
            c = substr(text, i, 1)
            if (c == "{") { open_("o"); i++ }
            else if (c == "[") { open_("a"); i++ }
            else if (c == "}" || c == "]") { depth--; i++; if (depth > 0) done_value(depth) }
            else if (c == "\"") {
                s = string_()
                if (kind[depth] == "o" && want_key[depth]) { key[depth] = s; want_key[depth] = 0 }
                else { value[path_here(depth)] = s; done_value(depth) }
            }
            else if (c ~ /[-0-9tfn]/) {
                s = ""
                while (i <= n && substr(text, i, 1) !~ /[],} \t\r\n]/) { s = s substr(text, i, 1); i++ }
                value[path_here(depth)] = s
                done_value(depth)
            }
            else i++
        }
        serving = value[".generation"]
        for (j = 0; (".generations[" j "].id") in value; j++)
            if (value[".generations[" j "].id"] == serving)
                print value[".generations[" j "].release"]
    }'
}

# The service is found by NAME, or by $HOTSWAP_CONTROL when that is set.
if [ -n "${HOTSWAP_CONTROL:-}" ]; then service=; else service=$name; fi

# Not running (exit 2 and "no hotswap answers"; a usage error is exit 2 too):
# nothing to roll back in hotswap; swap the two links.
running=yes
if out=$("$HOTSWAP" status ${service:+"$service"} 2>&1 >/dev/null); then
    :
else
    code=$?
    case $code:$out in
    2:*"no hotswap answers"*) running=no ;;
    *) fail "\`$HOTSWAP status $service\` exited $code: $out" ;;
    esac
fi
if [ "$running" = no ]; then
    previous=$(readlink "$root/previous" 2>/dev/null) || fail "$name is not running and $root/previous does not exist"
    was=$(readlink "$current" 2>/dev/null) || was=
    swap_link "$previous" "$current"
    [ -z "$was" ] || swap_link "$was" "$root/previous"
    say "$name is not running: current -> $previous, previous -> ${was:-nothing}. It runs when started."
    exit 0
fi

if "$HOTSWAP" rollback ${service:+"$service"} --wait; then
    :
else
    code=$?
    echo "rollback: \`$HOTSWAP rollback $service --wait\` exited $code; current is unchanged" >&2
    exit "$code"
fi

release=$("$HOTSWAP" status ${service:+"$service"} --json | serving_release)
[ -n "$release" ] || fail "\`$HOTSWAP status $service --json\` names no serving release"
base=${release##*/}
if [ ! -d "$releases/$base" ] || [ "$(cd "$releases/$base" && pwd -P)" != "$release" ]; then
    fail "the serving release $release is not in $releases; current is unchanged"
fi

was=$(readlink "$current" 2>/dev/null) || was=
swap_link "releases/$base" "$current" || fail "could not point $current at releases/$base"
if [ -n "$was" ] && [ "${was%/}" != "releases/$base" ]; then
    swap_link "$was" "$root/previous"
fi
say "releases/$base serves; current -> releases/$base, previous -> ${was:-nothing}"
