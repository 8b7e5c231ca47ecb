#!/bin/sh
# deploy.sh: copy a build into a new release folder, point `current` at it
# atomically, and let `hotswap reload NAME --wait` decide whether it stays.
#
#   deploy.sh --root /srv/app --name app [--keep 5] ./build
#
# Layout under --root (see docs/deploy.md):
#   releases/20261130-120000/   one folder per deploy (a suffix -02, -03, ...
#                               when two deploys fall in the same second)
#   current -> releases/...     what hotswap runs (--chdir /srv/app/current)
#   previous -> releases/...    what served before it
#
# Exit status: 0 the new release serves (or hotswap is not running and only
# the symlink moved); 1 the new release failed readiness: hotswap kept the old
# generation serving and `current` points at the old release again; 2 usage.
# Other codes are hotswap's own (`hotswap reload --help`), with `current` put
# back too. hotswap is run as ${HOTSWAP:-hotswap}; with HOTSWAP_CONTROL set,
# that control socket is used instead of the NAME's.
set -eu
LC_ALL=C
export LC_ALL

HOTSWAP=${HOTSWAP:-hotswap}
root=
name=
keep=5

say() { echo "deploy: $*"; }
fail() {
    echo "deploy: $*" >&2
    exit 1
}
usage() {
    echo "usage: deploy.sh --root DIR --name NAME [--keep N] SOURCE_DIR" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --root) [ $# -ge 2 ] || usage; root=$2; shift 2 ;;
    --name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
    --keep) [ $# -ge 2 ] || usage; keep=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -eu/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    --) shift; break ;;
    -*) echo "deploy: unknown option $1" >&2; usage ;;
    *) break ;;
    esac
done
if [ $# -ne 1 ] || [ -z "$root" ] || [ -z "$name" ]; then usage; fi
case $keep in '' | *[!0-9]* | 0) echo "deploy: --keep needs a number >= 1" >&2; usage ;; esac
[ -d "$1" ] || fail "$1 is not a directory"
source=$(cd "$1" && pwd)

mkdir -p "$root/releases"
root=$(cd "$root" && pwd)
releases=$root/releases
current=$root/current
if [ -e "$current" ] && [ ! -L "$current" ]; then
    fail "$current exists and is not a symlink; move it into $releases first"
fi

# One deploy or rollback at a time per app root (mkdir is atomic).
lock=$root/.deploy.lock
mkdir "$lock" 2>/dev/null ||
    fail "$lock exists: another deploy or rollback is running (if none is, remove it)"
trap 'rmdir "$lock" 2>/dev/null || :' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# `ln -sfn TARGET LINK.tmp.PID`, then rename it over LINK: rename(2) replaces
# LINK in one step, so LINK always exists and points at one release or the
# other. (`mv -T` renames onto LINK itself instead of into the directory that
# LINK points at.)
swap_link() {
    tmp=$2.tmp.$$
    if ln -sfn "$1" "$tmp" && mv -T "$tmp" "$2"; then
        return 0
    fi
    rm -f "$tmp"
    return 1
}

# The last path component of the symlink's target ("" when there is none).
link_base() {
    t=$(readlink "$1" 2>/dev/null) || t=
    t=${t%/}
    echo "${t##*/}"
}

# Deletes release folders beyond the newest $keep (by name, which sorts by
# time), never the one `current` or `previous` points at.
prune() {
    keep_current=$(link_base "$current")
    keep_previous=$(link_base "$root/previous")
    pattern='[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9]*'
    total=0
    for dir in "$releases"/$pattern; do
        [ -d "$dir" ] && total=$((total + 1))
    done
    older=$((total - keep))
    for dir in "$releases"/$pattern; do
        [ "$older" -gt 0 ] || break
        [ -d "$dir" ] || continue
        older=$((older - 1))
        base=${dir##*/}
        if [ "$base" = "$keep_current" ] || [ "$base" = "$keep_previous" ]; then
            continue
        fi
        rm -rf "$dir"
        say "removed old release releases/$base"
    done
}

# The service is found by NAME, or by $HOTSWAP_CONTROL when that is set
# (hotswap takes one or the other, not both).
if [ -n "${HOTSWAP_CONTROL:-}" ]; then service=; else service=$name; fi

# Is it running? Exit 2 is also hotswap's usage error: only "no hotswap
# answers" means that it is not running.
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

# A new release folder named for the time (UTC). Another deploy in the same
# second gets the next suffix after the highest one there (-02, -03, ...),
# so that the names sort in the order of the deploys even after pruning.
stamp=$(date -u +%Y%m%d-%H%M%S)
last=
for dir in "$releases/$stamp" "$releases/$stamp"-[0-9][0-9]; do
    if [ -e "$dir" ] || [ -L "$dir" ]; then last=${dir##*/}; fi
done
case $last in
'') release=$stamp ;;
"$stamp") release=$stamp-02 ;;
*)
    n=${last##*-}
    n=$((${n#0} + 1))
    [ "$n" -le 99 ] || fail "too many releases named $stamp-NN"
    release=$stamp-$(printf %02d "$n")
    ;;
esac
mkdir "$releases/$release"
if ! cp -R "$source/." "$releases/$release/"; then
    rm -rf "${releases:?}/$release"
    fail "copying $source to $releases/$release failed"
fi
say "copied $source to releases/$release"

previous=$(readlink "$current" 2>/dev/null) || previous=
swap_link "releases/$release" "$current" || fail "could not point $current at releases/$release"
say "current -> releases/$release"

if [ "$running" = no ]; then
    [ -z "$previous" ] || swap_link "$previous" "$root/previous"
    prune
    say "$name is not running: nothing reloaded. Start it from $current, for example"
    say "  $HOTSWAP --name $name --chdir $current --env-file $current/.env -l PORT -- ./run.sh"
    say "(or systemctl start $name): it will run releases/$release."
    exit 0
fi

# The gate: exit 0 only when the new generation is ready and the old one gone.
if "$HOTSWAP" reload ${service:+"$service"} --wait; then
    [ -z "$previous" ] || swap_link "$previous" "$root/previous"
    prune
    say "releases/$release serves"
    exit 0
else
    code=$?
fi

# hotswap did not switch: the old generation serves on, so `current` goes back
# to its release, and a later start or reload runs what is serving now.
if [ -n "$previous" ]; then
    swap_link "$previous" "$current" || fail "could not point $current back at $previous"
    back="current -> $previous again"
else
    rm -f "$current"
    back="current removed (there was none before)"
fi
prune
case $code in
1) why="releases/$release failed readiness (or hotswap refused the reload: see above); the old generation serves on" ;;
*) why="\`$HOTSWAP reload $service --wait\` exited $code" ;;
esac
echo "deploy: FAILED: $why; $back (releases/$release is kept to look at)" >&2
exit "$code"
