# Sourced by deploy/docker/*.sh and the container tests: pick the container
# engine and, for podman, make it work on a plain root machine.
#
#   source deploy/podman/env.sh   # sets ENGINE (docker or podman) and exports CONTAINERS_CONF if needed
#   ENGINE=podman source ...      # podman even where a Docker engine answers (the tests do)
#
# Docker is used when a Docker engine answers; otherwise podman (installed
# with apt-get by scripts/install-deps.sh containers, as root). What a real
# run on a root VM without systemd showed podman 4.3 needs there, written to
# build/containers/containers.conf and never to /etc:
#   - runtime runc: crun 1.8 refuses hybrid cgroup v1/v2 hierarchies;
#   - explicit nofile/nproc ulimits no higher than this shell's hard limits:
#     podman's defaults are higher, and root without CAP_SYS_RESOURCE cannot
#     raise them. nproc is capped at kernel.pid_max too: podman lowers its
#     own hard nproc limit to that at start, and the container cannot go above;
#   - network_backend netavark (a stale CNI config otherwise wins). Tests run
#     every container with --network=host anyway: no bridge traffic.
# Set SECURECHAT_CONTAINERS_CONF=system to keep the machine's own settings.

_securechat_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if [[ -z ${ENGINE:-} ]]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        ENGINE=docker
    else
        ENGINE=podman
    fi
fi
if [[ $ENGINE == podman ]]; then
    bash "$_securechat_root/scripts/install-deps.sh" containers
fi

_conf=$_securechat_root/build/containers/containers.conf
# Ours is (re)written every time, also when an earlier run exported it.
if [[ $ENGINE == podman && ${SECURECHAT_CONTAINERS_CONF:-} != system && ${CONTAINERS_CONF:-$_conf} == "$_conf" ]]; then
    mkdir -p "$(dirname "$_conf")"
    _nofile=$(ulimit -Hn) _nproc=$(ulimit -Hu)
    [[ $_nofile == unlimited ]] && _nofile=1048576
    [[ $_nproc == unlimited ]] && _nproc=1048576
    _pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo "$_nproc")
    ((_nproc > _pid_max)) && _nproc=$_pid_max
    _runtime=crun
    command -v runc >/dev/null 2>&1 && _runtime=runc
    cat >"$_conf.tmp" <<CONF
# Written by deploy/podman/env.sh; see the comments there.
[containers]
default_ulimits = ["nofile=$_nofile:$_nofile", "nproc=$_nproc:$_nproc"]

[engine]
runtime = "$_runtime"

[network]
network_backend = "netavark"
CONF
    mv "$_conf.tmp" "$_conf"
    export CONTAINERS_CONF=$_conf
    unset _nofile _nproc _pid_max _runtime
fi
unset _conf
export ENGINE
unset _securechat_root
