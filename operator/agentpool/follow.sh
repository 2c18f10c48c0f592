# shellcheck shell=sh
# `agentpool logs` in the agent container (see agentpool/follow.py).
# $0 step directory id, $1 the operator's state dir (may be empty), $2 offset, $3 follow|once.
# follow: waits for the step's output file, then copies it as it grows until `rc` is written or
# the directory is removed (the operator forgets a step's files once its build moves on: the
# open descriptor 4 still reads them). once: copies what is there now; no output file: exit 3.
# `dd skip` moves the descriptor past what was already shown (a seek, nothing is read).
d="${AGENTPOOL_STATE_DIR:-${1:-${TMPDIR:-/tmp}/.agentpool}}/$0"; o=$2; z=1; w=1
sleep 0.001 2>/dev/null && { z=0.2; w=0.02; }
while [ ! -f "$d/out" ]; do
  [ "$3" = once ] && exit 3
  sleep "$w"
done
exec 4<"$d/out" || exit 3
[ "$o" -gt 0 ] && dd bs=1 skip="$o" count=0 <&4 2>/dev/null
while :; do
  e=; { [ -s "$d/rc" ] || [ ! -d "$d" ]; } && e=1
  cat <&4
  if [ -n "$e" ] || [ "$3" = once ]; then exit 0; fi
  sleep "$z"
done
