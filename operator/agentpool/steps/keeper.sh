# shellcheck shell=sh
# The step keeper: started once per step, detached from the session (setsid), it starts the
# step in its own process group, waits for it, writes `rc` and enforces the timeout.
# Arguments: state dir of the step, timeout seconds (0: none), grace seconds, staged payload
# (launcher then script), launcher length, shell. Small files are written with one `echo` and
# read with `read -r`, which fails until the whole line is there: no tmp + mv needed for them.
d=$1; t=$2; g=$3; f=$4; SH=$6
p=; r=; q=
# A timer is a subshell waiting on a `sleep`. It is never signalled: a signal reaching a freshly
# forked shell before it dropped the keeper's traps is swallowed. Instead the keeper KILLs the
# timer's sleep (uncatchable) by the pid the timer stored in `t.<name>`, after creating `end`;
# the timer stores that pid before it looks for `end` (or a removed dir) and then KILLs its own
# sleep: whichever comes second sees the other, so no sleep outlives the step.
after() {
  ( sleep "$2" & s=$!
    { echo $s >"$d/t.$1" && [ ! -e "$d/end" ] && [ -d "$d" ]; } 2>/dev/null || kill -KILL $s
    wait $s && eval "$3" ) &
}
untime() { for n in t k; do read -r s 2>/dev/null <"$d/t.$n" && kill -KILL "$s" 2>/dev/null; done; }
stop() {
  [ -n "$r" ] && return 0
  # Before the step exists a request is only remembered; it is acted on right after launch.
  [ -n "$p" ] || { q=$1; return 0; }
  r=$1
  # A TERM reaching the forked step before `setsid` is swallowed by the traps it inherited;
  # the launcher, running after `setsid`, sees `halt` and exits instead.
  : >"$d/halt" 2>/dev/null
  kill -TERM "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
  # shellcheck disable=SC2016 # expanded when the timer fires (after's eval), not now.
  after k "$g" 'kill -KILL "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null'
}
# Traps first: the pid in `started` invites USR1, whose default action would end the keeper.
trap 'w=1' HUP INT TERM
trap 'w=1; stop cancelled' USR1
trap 'w=1; stop timeout' ALRM
mkdir "$d" 2>/dev/null
set -C
if ! echo $$ >"$d/started"; then rm -f "$f"; exit 0; fi 2>/dev/null
set +C
mv -f "$f" "$d/launch"
tail -c +$(($5 + 1)) "$d/launch" >"$d/script"
# Cancelled before launch: nothing runs. `pid` names this (ending) keeper, never 0, which
# `kill` and `killpg` read as "my own process group".
if [ -e "$d/cancel" ] || [ -n "$q" ]; then
  echo $$ >"$d/pid"; : >"$d/out"; echo "143 ${q:-cancelled}" >"$d/rc"; exit 0
fi
if command -v setsid >/dev/null 2>&1; then
  setsid "$SH" "$d/launch" "$d" >"$d/out" 2>&1 </dev/null &
else
  "$SH" "$d/launch" "$d" >"$d/out" 2>&1 </dev/null &
fi
p=$!
echo "$p" >"$d/pid"
[ -n "$q" ] && stop "$q"
[ -e "$d/cancel" ] && stop cancelled
[ "$t" -gt 0 ] && after t "$t" "kill -ALRM $$"
# A trap interrupts `wait` (status >128) without consuming the step's status: wait again.
# Waiting again for a status already consumed gives 127, then the first one stands.
rc=
while :; do
  w=; wait "$p"; x=$?
  if [ -n "$w" ] && [ "$x" -gt 128 ]; then rc=$x; continue; fi
  [ "$x" = 127 ] && [ -n "$rc" ] || rc=$x
  break
done
: >"$d/end"
untime
# The launcher names what kept the script from starting (see build_launcher).
[ -z "$r" ] && [ -s "$d/setup" ] && read -r r 2>/dev/null <"$d/setup"
case $r in exit|timeout|cancelled|shell|workdir) ;; *) r= ;; esac
echo "$rc ${r:-exit}" >"$d/rc"
