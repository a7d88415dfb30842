#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, for tests.
#
#   tests/k8s/cluster.sh up                 build what is missing, start, wait until the node is Ready,
#                                           print "KUBECONFIG=<path>" (the only line on stdout)
#   tests/k8s/cluster.sh load-image IMAGE.. import local Docker images into the node's containerd (k8s.io)
#   tests/k8s/cluster.sh down               stop everything this script started and remove pod leftovers
#   tests/k8s/cluster.sh status             print "up", "down" or "degraded: ..." (exit 0 only when up)
#   tests/k8s/cluster.sh apiserver-stop     stop kube-apiserver only (fault tests; the node and pods keep running)
#   tests/k8s/cluster.sh apiserver-start    start it again
#   tests/k8s/cluster.sh build              only build/cache the binaries and the pause image
#   tests/k8s/cluster.sh kubectl ARGS..     run the cached kubectl against the cluster
#   tests/k8s/cluster.sh crictl ARGS..      run the cached crictl against the cluster's containerd
#
# Components: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubelet built from the Go
# module proxy (cached under $OSB_K8S_CACHE/<version>), a private containerd instance (Debian's package,
# its own config, root, state and socket; Docker's containerd is never touched), runc, Debian's CNI plugins
# on a bridge of our own, and a local pause image built from busybox-static. No registry: every image must
# be imported with load-image and pods must use imagePullPolicy Never/IfNotPresent.
# See tests/k8s/README.md.
set -euo pipefail

# ---------------------------------------------------------------------------------------------- settings
K8S_VERSION=${OSB_K8S_VERSION:-v1.34.4}
CRICTL_VERSION=${OSB_K8S_CRICTL_VERSION:-v1.34.0}
PAUSE_IMAGE=localhost/opensandbox/pause:1
PAUSE_TAG=pause-1

CACHE_ROOT=${OSB_K8S_CACHE:-/var/cache/opensandbox-k8s}
CACHE=$CACHE_ROOT/$K8S_VERSION
BIN=$CACHE/bin
STATE=/var/lib/opensandbox-k8s
RUNDIR=/run/opensandbox-k8s

NODE_NAME=osbk8s-node
BRIDGE=osbk8s0
POD_CIDR=10.244.0.0/22     # room for OSB_K8S_MAX_PODS pods (bench/kubernetes_rss.sh runs 500)
NODE_IP=10.244.0.1          # the bridge's address: the node's InternalIP and the kubelet's listen address
SERVICE_CIDR=10.96.0.0/24
SERVICE_IP=10.96.0.1
APISERVER_PORT=${OSB_K8S_APISERVER_PORT:-16443}
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
KCM_PORT=10257
SCHED_PORT=10259
CHAIN_PREFIXES='CNI-|KUBE-'      # iptables chains that our kubelet/CNI plugins may create
FW_COMMENT=opensandbox-k8s

PKI=$STATE/pki
CONF=$STATE/config
LOGS=$STATE/log
PIDS=$STATE/pid
SAVED=$STATE/saved
ADMIN_KUBECONFIG=$STATE/admin.kubeconfig
CTRD_SOCK=$RUNDIR/containerd/containerd.sock
CNI_CONF_DIR=$STATE/cni/net.d
CNI_BIN_DIR=/usr/lib/cni

COMPONENTS="containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet"

# created, when missing, by containerd (netns), libcni (result cache) and the kubelet (device-plugins
# socket, pod log symlinks) whatever their configured roots
FOREIGN_DIRS="/var/run/netns /var/lib/cni /var/lib/kubelet /var/log/containers"

KERNEL_TUNABLES="vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes"

# Extra flags (word-split), e.g. OSB_K8S_APISERVER_ARGS="--feature-gates=Foo=true":
#   OSB_K8S_APISERVER_ARGS, OSB_K8S_KUBELET_ARGS
# OSB_K8S_MAX_PODS: the node's pod capacity (default 110, as kubeadm's; up to ~1000 fit the pod network)

# ------------------------------------------------------------------------------------------------ helpers
log() { printf '[k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root"; }

# Everything except the final KUBECONFIG line goes to stderr: fd 3 is the real stdout.
exec 3>&1 1>&2

lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/lock"
    flock 9
}

ensure_packages() {
    local missing="" p
    for p in containerd runc containernetworking-plugins openssl iptables iproute2 util-linux \
        busybox-static curl; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    log "installing Debian packages:$missing"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
}

# ------------------------------------------------------------------------------------------------- build
k8s_ldflags() {
    local v=$K8S_VERSION minor
    minor=${v#v1.}; minor=${minor%%.*}
    local x="" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        x="$x -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
        x="$x -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    done
    printf '%s' "-s -w$x"
}

build_binaries() {
    local want="etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl crictl" b missing=""
    for b in $want; do [ -x "$BIN/$b" ] || missing="$missing $b"; done
    [ -z "$missing" ] && return 0
    command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
    command -v go >/dev/null || die "go (>= 1.24, or any go with GOTOOLCHAIN=auto) is needed to build:$missing"
    mkdir -p "$BIN"
    local t0=$SECONDS
    # a private build cache (3+ GB for Kubernetes), dropped once the binaries are in place unless
    # OSB_K8S_KEEP_GOCACHE=1; the module download cache is Go's usual one
    export GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 GOCACHE=$CACHE/gocache
    if [ ! -x "$BIN/crictl" ]; then
        log "building crictl $CRICTL_VERSION"
        GOBIN=$BIN go install -ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
            "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" >&2
    fi
    local k b2 need_k8s=0
    for b2 in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
        [ -x "$BIN/$b2" ] || need_k8s=1
    done
    if [ "$need_k8s" -eq 1 ]; then
        local dir=$CACHE/build
        mkdir -p "$dir/out"
        log "building Kubernetes $K8S_VERSION and etcd in $dir (first build takes a while on 2 cores)"
        # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging/...,
        # which a module consumer does not see; pin each of them to the matching published v0.Y.Z.
        local modfile staging
        modfile=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
            sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
        [ -f "$modfile" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION's go.mod"
        staging=v0.${K8S_VERSION#v1.}
        {
            echo "// Written by tests/k8s/cluster.sh: builds Kubernetes $K8S_VERSION from the module proxy."
            echo "module opensandbox.local/k8s-build"
            echo
            echo "go 1.24.0"
            echo
            echo "godebug default=go1.24"
            echo
            echo "require k8s.io/kubernetes $K8S_VERSION"
            echo
            awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$modfile" | sort -u |
                while read -r k; do echo "replace $k => $k $staging"; done
        } >"$dir/go.mod.new"
        if ! cmp -s "$dir/go.mod.new" "$dir/go.mod.orig" 2>/dev/null; then
            mv "$dir/go.mod.new" "$dir/go.mod.orig"
            cp "$dir/go.mod.orig" "$dir/go.mod"
            rm -f "$dir/go.sum"
        else
            rm -f "$dir/go.mod.new"
        fi
        # etcd: the version Kubernetes itself requires (go.etcd.io/etcd/server/v3 has its main package
        # in the module root), built in the same module so its dependencies match and compile once.
        (cd "$dir" && GOFLAGS="$GOFLAGS -mod=mod" go build -ldflags="$(k8s_ldflags)" -o out/ \
            k8s.io/kubernetes/cmd/kube-apiserver \
            k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler \
            k8s.io/kubernetes/cmd/kubelet \
            k8s.io/kubernetes/cmd/kubectl \
            go.etcd.io/etcd/server/v3) >&2
        mv "$dir/out/server" "$dir/out/etcd"
        for b2 in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
            mv -f "$dir/out/$b2" "$BIN/$b2"
        done
        (cd "$dir" && go list -m go.etcd.io/etcd/server/v3) >"$BIN/etcd.version"
    fi
    [ "${OSB_K8S_KEEP_GOCACHE:-0}" = 1 ] || rm -rf "$CACHE/gocache"
    log "built:$missing in $((SECONDS - t0))s"
}

# The sandbox ("pause") image: busybox-static in a one-layer image whose shell sleeps until SIGTERM/SIGINT.
# Written as a `docker save`-format tar by hand (no Docker needed) and cached.
build_pause_image() {
    local tar=$CACHE_ROOT/images/$PAUSE_TAG.tar
    [ -s "$tar" ] && return 0
    [ -x /bin/busybox ] || die "/bin/busybox missing (apt-get install busybox-static)"
    log "building the pause image $PAUSE_IMAGE"
    mkdir -p "$CACHE_ROOT/images"
    local work
    work=$(mktemp -d)
    mkdir -p "$work/root/bin" "$work/root/dev" "$work/root/proc" "$work/root/sys" "$work/root/etc" "$work/img"
    cp /bin/busybox "$work/root/bin/busybox"
    ln -s busybox "$work/root/bin/sh"
    ln -s busybox "$work/root/bin/sleep"
    cat >"$work/root/bin/pause" <<'EOF'
#!/bin/sh
# PID 1 of every pod sandbox: holds the namespaces, reaps orphans (wait), exits 0 on SIGTERM/SIGINT.
trap 'exit 0' TERM INT
while :; do
    sleep 2147483647 &
    wait
done
EOF
    chmod 0755 "$work/root/bin/pause"
    tar -C "$work/root" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$work/layer.tar" .
    local diff cfg
    diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
    mkdir -p "$work/img/$diff"
    mv "$work/layer.tar" "$work/img/$diff/layer.tar"
    printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Entrypoint":["/bin/pause"],"Env":["PATH=/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tests/k8s/cluster.sh"}]}' \
        "$diff" >"$work/img/config.json"
    cfg=$(sha256sum "$work/img/config.json" | cut -d' ' -f1)
    mv "$work/img/config.json" "$work/img/$cfg.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cfg" "$PAUSE_IMAGE" "$diff" \
        >"$work/img/manifest.json"
    tar -C "$work/img" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$work"
}

# -------------------------------------------------------------------------------------------------- certs
# openssl helpers; EC P-256 keys, 10-year certificates signed by our own CA.
mk_cert() { # name CN O(or -) SANs(or -) usage(client|server|both)
    local name=$1 cn=$2 org=$3 sans=$4 usage=$5 subj ext
    subj="/CN=$cn"
    [ "$org" != - ] && subj="/O=$org$subj"
    ext=$PKI/$name.ext
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        case $usage in
        client) echo "extendedKeyUsage=clientAuth" ;;
        server) echo "extendedKeyUsage=serverAuth" ;;
        both) echo "extendedKeyUsage=serverAuth,clientAuth" ;;
        esac
        [ "$sans" != - ] && echo "subjectAltName=$sans"
    } >"$ext"
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$ext"
}

make_pki() {
    [ -s "$PKI/done" ] && return 0
    log "generating certificates in $PKI"
    rm -rf "$PKI"
    mkdir -p "$PKI"
    chmod 0700 "$PKI"
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=opensandbox-k8s-ca" -days 3650 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -out "$PKI/ca.crt" 2>/dev/null
    mk_cert apiserver kube-apiserver - \
        "IP:127.0.0.1,IP:$SERVICE_IP,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" server
    mk_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters - client
    mk_cert admin kubernetes-admin system:masters - client
    mk_cert controller-manager system:kube-controller-manager - - client
    mk_cert scheduler system:kube-scheduler - - client
    mk_cert kubelet-client "system:node:$NODE_NAME" system:nodes - client
    mk_cert kubelet-server "$NODE_NAME" - "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost" server
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    chmod 0600 "$PKI"/*.key
    local who
    for who in admin controller-manager scheduler kubelet-client; do
        write_kubeconfig "$who"
    done
    date >"$PKI/done"
}

write_kubeconfig() { # cert name
    local who=$1 out user
    case $who in
    admin) out=$ADMIN_KUBECONFIG user=kubernetes-admin ;;
    kubelet-client) out=$CONF/kubelet.kubeconfig user="system:node:$NODE_NAME" ;;
    *) out=$CONF/$who.kubeconfig user=$who ;;
    esac
    mkdir -p "$(dirname "$out")"
    cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: opensandbox-k8s
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$who.crt")
    client-key-data: $(base64 -w0 "$PKI/$who.key")
contexts:
- name: $user@opensandbox-k8s
  context:
    cluster: opensandbox-k8s
    user: $user
    namespace: default
current-context: $user@opensandbox-k8s
EOF
    chmod 0600 "$out"
}

# ------------------------------------------------------------------------------------------------ configs
write_configs() {
    mkdir -p "$CONF" "$CNI_CONF_DIR" "$STATE/cni/ipam" "$STATE/containerd" "$RUNDIR/containerd" \
        "$STATE/kubelet" "$STATE/pod-logs" "$STATE/etcd"
    chmod 0700 "$STATE/etcd"
    cat >"$CONF/containerd.toml" <<EOF
# Private containerd for tests/k8s/cluster.sh (not Docker's).
version = 2
root = "$STATE/containerd"
state = "$RUNDIR/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CTRD_SOCK"

[ttrpc]
  address = "$CTRD_SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This machine denies lowering oom_score_adj (no CAP_SYS_RESOURCE): clamp the kubelet's negative
  # values (-998 for sandboxes, -997 for Guaranteed pods) to containerd's own score.
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
EOF
    cat >"$CNI_CONF_DIR/10-osbk8s.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "osbk8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 20\n' "$CTRD_SOCK" "$CTRD_SOCK" \
        >"$CONF/crictl.yaml"
    # Pods get no DNS server (there is none): their resolver would only ask their own loopback.
    printf '# opensandbox-k8s: no cluster DNS\nnameserver 127.0.0.1\noptions ndots:1\n' >"$CONF/resolv.conf"
    cat >"$CONF/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CTRD_SOCK
imageServiceEndpoint: unix://$CTRD_SOCK
resolvConf: $CONF/resolv.conf
clusterDomain: cluster.local
podCIDR: $POD_CIDR
podLogsDir: $STATE/pod-logs
registerNode: true
maxPods: ${OSB_K8S_MAX_PODS:-110}
makeIPTablesUtilChains: false
rotateCertificates: false
serverTLSBootstrap: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
evictionPressureTransitionPeriod: 10s
EOF
}

# ------------------------------------------------------------------------------------------------ process
pidfile() { echo "$PIDS/$1.pid"; }

# pid of a component if it is alive and is really the binary we started, else nothing
comp_pid() {
    local f pid exe
    f=$(pidfile "$1")
    [ -s "$f" ] || return 1
    read -r pid exe <"$f" || true
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    local argv0=""
    IFS= read -r -d '' argv0 <"/proc/$pid/cmdline" 2>/dev/null || true
    [ "$argv0" = "$exe" ] || return 1
    # a zombie (not yet reaped) is as good as gone
    [ "$(awk '/^State:/{print $2}' "/proc/$pid/status" 2>/dev/null)" != Z ] || return 1
    echo "$pid"
}

start_comp() { # name binary args...
    local name=$1 exe=$2
    shift 2
    mkdir -p "$PIDS" "$LOGS"
    log "starting $name"
    {
        echo "==== $(date -u +%FT%TZ) $exe $*"
    } >>"$LOGS/$name.log"
    # own session (no signals from the caller's terminal), no inherited descriptors beyond 0-2: a caller run
    # under `flock LOCK cmd` (or two nested ones) has its locks on 3, 4, ...; a component that kept one held
    # the lock for as long as the cluster ran (it happened: every later test waited on it)
    setsid "$exe" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    local pid=$! i argv0
    echo "$pid $exe" >"$(pidfile "$name")"
    # until setsid has exec'd the component, /proc/$pid/cmdline still says setsid (and comp_pid would take
    # the component for gone): wait for the exec, at most 2 s
    for ((i = 0; i < 200; i++)); do
        argv0=""
        IFS= read -r -d '' argv0 <"/proc/$pid/cmdline" 2>/dev/null || true
        [ "$argv0" = "$exe" ] || [ ! -d "/proc/$pid" ] && break
        sleep 0.01
    done
}

stop_comp() { # name [timeout]
    local name=$1 timeout=${2:-20} pid i
    pid=$(comp_pid "$name") || { rm -f "$(pidfile "$name")"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        comp_pid "$name" >/dev/null || break
        sleep 0.1
    done
    if comp_pid "$name" >/dev/null; then
        log "$name did not stop in ${timeout}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$(pidfile "$name")"
}

fail_up() { # component message
    local comp=$1
    shift
    log "error: $*"
    if [ -f "$LOGS/$comp.log" ]; then
        log "---- last lines of $LOGS/$comp.log"
        tail -n 40 "$LOGS/$comp.log" >&2
        log "----"
    fi
    log "tearing the partial cluster down (logs stay in $LOGS)"
    do_down || true
    exit 1
}

wait_for() { # component timeout-seconds description command...
    local comp=$1 timeout=$2 what=$3 deadline
    shift 3
    deadline=$((SECONDS + timeout))
    while ! "$@" >/dev/null 2>&1; do
        if [ "$comp" != - ] && ! comp_pid "$comp" >/dev/null; then
            fail_up "$comp" "$comp exited while waiting for $what"
        fi
        if ((SECONDS >= deadline)); then
            fail_up "$comp" "timed out after ${timeout}s waiting for $what"
        fi
        sleep 0.5
    done
}

port_free() { # addr port
    ! (exec 2>/dev/null; : </dev/tcp/"$1"/"$2")
}

kctl() { "$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
ctr_() { ctr --address "$CTRD_SOCK" "$@"; }
crictl_() { "$BIN/crictl" --config "$CONF/crictl.yaml" --timeout 20s "$@"; }

node_ready() {
    [ "$(kctl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
apiserver_ready() {
    curl -fsS --max-time 3 --cacert "$PKI/ca.crt" "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1
}

# "up" / "degraded: ..." / "down"
cluster_state() {
    local c alive="" dead=""
    for c in $COMPONENTS; do
        if comp_pid "$c" >/dev/null; then alive="$alive $c"; else dead="$dead $c"; fi
    done
    if [ -z "$alive" ]; then
        echo down
    elif [ -n "$dead" ]; then
        echo "degraded: not running:$dead"
    elif ! apiserver_ready; then
        echo "degraded: apiserver not ready"
    elif ! node_ready; then
        echo "degraded: node $NODE_NAME not Ready"
    else
        echo up
    fi
}

# ----------------------------------------------------------------------------------------------------- up
save_host_state() {
    mkdir -p "$SAVED"
    # iptables chains of the kinds our kubelet/CNI might add, existing before we start (kept at down)
    if [ ! -f "$SAVED/iptables-chains" ]; then
        local t
        for t in filter nat mangle; do
            iptables -w -t "$t" -S 2>/dev/null | awk -v t="$t" '$1 == "-N" {print t, $2}'
        done | grep -E " ($CHAIN_PREFIXES)" >"$SAVED/iptables-chains" || true
    fi
    # directories outside our own that containerd/libcni/the kubelet create (hard-coded paths): the ones
    # that do not exist yet are removed again at down
    local d
    for d in $FOREIGN_DIRS; do
        [ -e "$d" ] || grep -qx "$d" "$SAVED/created-dirs" 2>/dev/null || echo "$d" >>"$SAVED/created-dirs"
    done
    # kernel tunables the kubelet rewrites (vm.overcommit_memory, kernel.panic, ...): restored at down
    if [ ! -f "$SAVED/sysctl" ]; then
        local k
        for k in $KERNEL_TUNABLES; do
            if [ -r "/proc/sys/$k" ]; then echo "$k $(cat "/proc/sys/$k")"; fi
        done >"$SAVED/sysctl"
    fi
}

setup_network() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        date >"$SAVED/bridge-created"
    fi
    ip addr show dev "$BRIDGE" | grep "inet $NODE_IP/${POD_CIDR#*/} " >/dev/null || {
        ip addr flush dev "$BRIDGE"
        ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
    }
    ip link set "$BRIDGE" up
    # Docker sets FORWARD's policy to DROP and br_netfilter is loaded: let pods on our bridge talk to
    # each other (our own rule, tagged with a comment and removed at down).
    if ! iptables -w -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j ACCEPT 2>/dev/null; then
        iptables -w -I FORWARD 1 -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j ACCEPT
    fi
}

# kube-apiserver alone (also for fault tests: `apiserver-stop` / `apiserver-start` leave the node and its pods
# running). OSB_K8S_APISERVER_ARGS is split into words on purpose.
start_apiserver() {
    # shellcheck disable=SC2086
    start_comp kube-apiserver "$BIN/kube-apiserver" \
        --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" --advertise-address "$NODE_IP" \
        --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --authorization-mode Node,RBAC \
        --enable-admission-plugins NodeRestriction \
        --allow-privileged=true \
        --client-ca-file "$PKI/ca.crt" \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "$PKI/ca.crt" \
        --kubelet-preferred-address-types InternalIP \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$PKI/sa.pub" \
        --service-account-signing-key-file "$PKI/sa.key" \
        --profiling=false --v=1 ${OSB_K8S_APISERVER_ARGS:-}
    wait_for kube-apiserver 120 "kube-apiserver /readyz" apiserver_ready
}

do_up() {
    local t0=$SECONDS st
    st=$(cluster_state)
    if [ "$st" = up ]; then
        log "already up"
        echo "KUBECONFIG=$ADMIN_KUBECONFIG" >&3
        return 0
    fi
    if [ "$st" != down ]; then
        log "cluster is $st: restarting it"
        do_down
    else
        # leftovers of a crashed run (processes gone, mounts/bridge/netns still there)
        [ -d "$RUNDIR" ] || [ -d "$STATE/kubelet" ] && do_down
    fi

    ensure_packages
    build_binaries
    build_pause_image
    [ -x "$CNI_BIN_DIR/bridge" ] || die "$CNI_BIN_DIR/bridge missing (containernetworking-plugins)"
    local p
    for p in "127.0.0.1 $APISERVER_PORT" "127.0.0.1 $ETCD_CLIENT_PORT" "127.0.0.1 $ETCD_PEER_PORT" \
        "127.0.0.1 $KCM_PORT" "127.0.0.1 $SCHED_PORT" "127.0.0.1 $KUBELET_HEALTHZ_PORT" "127.0.0.1 $KUBELET_PORT"; do
        # shellcheck disable=SC2086
        port_free $p || die "port ${p#* } on ${p% *} is already in use"
    done

    mkdir -p "$STATE" "$RUNDIR" "$LOGS" "$PIDS"
    # fresh logs for this run (the previous run's are kept as *.log.1)
    local f
    for f in "$LOGS"/*.log; do [ -e "$f" ] && mv -f "$f" "$f.1"; done
    make_pki
    write_configs
    save_host_state
    setup_network

    # containerd
    start_comp containerd "$(command -v containerd)" --config "$CONF/containerd.toml" --log-level info
    wait_for containerd 30 "containerd's socket" ctr_ version
    if ! ctr_ -n k8s.io images ls -q | grep -x "$PAUSE_IMAGE" >/dev/null; then
        ctr_ -n k8s.io images import "$CACHE_ROOT/images/$PAUSE_TAG.tar" >&2 ||
            fail_up containerd "could not import the pause image"
    fi

    # etcd
    start_comp etcd "$BIN/etcd" --name osbk8s --data-dir "$STATE/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "osbk8s=http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster-state new --unsafe-no-fsync --log-level warn
    wait_for etcd 60 "etcd's health" curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

    start_apiserver

    start_comp kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig "$CONF/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$CONF/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$CONF/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
        --leader-elect=false --use-service-account-credentials=true \
        --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" --allocate-node-cidrs=false \
        --profiling=false --v=1

    start_comp kube-scheduler "$BIN/kube-scheduler" \
        --kubeconfig "$CONF/scheduler.kubeconfig" \
        --authentication-kubeconfig "$CONF/scheduler.kubeconfig" \
        --authorization-kubeconfig "$CONF/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" \
        --leader-elect=false --profiling=false --v=1

    # shellcheck disable=SC2086
    start_comp kubelet "$BIN/kubelet" \
        --config "$CONF/kubelet.yaml" --kubeconfig "$CONF/kubelet.kubeconfig" \
        --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" \
        --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1 ${OSB_K8S_KUBELET_ARGS:-}
    wait_for kubelet 60 "the kubelet's /healthz" \
        curl -fsS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
    wait_for kubelet 120 "node $NODE_NAME to be Ready" node_ready
    wait_for kube-controller-manager 120 "the default ServiceAccount" kctl -n default get serviceaccount default
    wait_for kube-controller-manager 60 "kube-root-ca.crt in namespace default" \
        kctl -n default get configmap kube-root-ca.crt
    for p in $COMPONENTS; do
        comp_pid "$p" >/dev/null || fail_up "$p" "$p exited during start-up"
    done
    log "cluster up in $((SECONDS - t0))s (Kubernetes $K8S_VERSION, node $NODE_NAME, pods $POD_CIDR)"
    echo "KUBECONFIG=$ADMIN_KUBECONFIG" >&3
}

# --------------------------------------------------------------------------------------------------- down
# mount points at or under a directory, deepest first
mounts_under() {
    awk -v d="$1" '{ m = $5; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print m }' \
        /proc/self/mountinfo | sort -r
}

unmount_under() {
    local d=$1 m
    for _ in 1 2 3; do
        mounts_under "$d" | while IFS= read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    done
    [ -z "$(mounts_under "$d")" ] || log "warning: mounts left under $d: $(mounts_under "$d" | tr '\n' ' ')"
}

# pids whose cgroup (any v1 hierarchy or v2) is under the kubelet's "kubepods" tree
kubepods_pids() {
    local d
    for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/unified/kubepods; do
        if [ -d "$d" ]; then find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
    done | sort -un
}

# shims of OUR containerd (their command line names our socket)
our_shim_pids() {
    local p
    for p in /proc/[0-9]*; do
        case $(readlink "$p/exe" 2>/dev/null) in */containerd-shim*) ;; *) continue ;; esac
        if grep -aF -- "$CTRD_SOCK" "$p/cmdline" >/dev/null 2>&1; then echo "${p#/proc/}"; fi
    done
    return 0
}

remove_iptables_additions() {
    local t c line
    while iptables -w -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j ACCEPT 2>/dev/null; do
        iptables -w -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j ACCEPT
    done
    # chains named CNI-*/KUBE-* that did not exist before our first up (e.g. portmap's CNI-HOSTPORT-*)
    [ -f "$SAVED/iptables-chains" ] || return 0
    for t in filter nat mangle; do
        local new
        new=$(iptables -w -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E "^($CHAIN_PREFIXES)" |
            while read -r c; do grep -qx "$t $c" "$SAVED/iptables-chains" || echo "$c"; done) || true
        [ -n "$new" ] || continue
        log "removing iptables chains (table $t): ${new//$'\n'/ }"
        for c in $new; do
            # rules that jump to it, anywhere in the table
            { iptables -w -t "$t" -S | grep -E -- "-j $c( |\$)" || true; } | while read -r line; do
                # shellcheck disable=SC2086
                eval "iptables -w -t $t ${line/-A /-D }" 2>/dev/null || true
            done
        done
        for c in $new; do iptables -w -t "$t" -F "$c" 2>/dev/null || true; done
        for c in $new; do iptables -w -t "$t" -X "$c" 2>/dev/null || true; done
    done
}

do_down() {
    local c
    # 1. the kubelet first, so that it does not restart what we remove; then the control plane
    stop_comp kubelet 30
    stop_comp kube-scheduler
    stop_comp kube-controller-manager
    stop_comp kube-apiserver
    stop_comp etcd

    # 2. pods: through CRI while our containerd runs (CNI DEL releases IPs, veths, netns)
    local netns_file=$SAVED/netns
    mkdir -p "$SAVED"
    if ! comp_pid containerd >/dev/null && [ -d "$STATE/containerd/io.containerd.grpc.v1.cri/sandboxes" ] &&
        [ -n "$(ls -A "$STATE/containerd/io.containerd.grpc.v1.cri/sandboxes" 2>/dev/null)" ] &&
        [ -f "$CONF/containerd.toml" ]; then
        # containerd died with pods: start it again so that CRI can tear them down properly
        log "containerd is not running but pod sandboxes are left: starting it to remove them"
        start_comp containerd "$(command -v containerd)" --config "$CONF/containerd.toml" --log-level info
        local i
        for ((i = 0; i < 60; i++)); do
            ctr_ version >/dev/null 2>&1 && break
            comp_pid containerd >/dev/null || break
            sleep 0.5
        done
    fi
    if comp_pid containerd >/dev/null; then
        # remember every sandbox's netns in case CRI cannot remove it, and every container id (their
        # shims' sockets, in containerd's shared /run/containerd/s, outlive shims that were killed)
        local id
        ctr_ -n k8s.io containers ls -q >>"$SAVED/container-ids" 2>/dev/null || true
        for id in $(ctr_ -n k8s.io containers ls -q 2>/dev/null); do
            ctr_ -n k8s.io containers info "$id" 2>/dev/null |
                grep -o '"path": *"/[^"]*netns/[^"]*"' | sed 's/.*"\(\/[^"]*\)"$/\1/'
        done | sort -u >>"$netns_file" || true
        if [ -x "$BIN/crictl" ]; then
            local pods
            pods=$(crictl_ pods -q 2>/dev/null) || true
            if [ -n "$pods" ]; then
                log "removing $(echo "$pods" | wc -w) pod sandbox(es) through CRI"
                # shellcheck disable=SC2086
                crictl_ stopp $pods >/dev/null 2>&1 || true
                # shellcheck disable=SC2086
                crictl_ rmp -f $pods >/dev/null 2>&1 || true
            fi
        fi
        stop_comp containerd 20
    fi
    rm -f "$(pidfile containerd)"

    # 3. whatever survived: container processes in the kubepods cgroups, then our containerd's shims
    local pids
    pids=$(kubepods_pids)
    if [ -n "$pids" ]; then
        log "killing leftover pod processes: ${pids//$'\n'/ }"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.5
    fi
    pids=$(our_shim_pids)
    if [ -n "$pids" ]; then
        log "killing leftover shims of our containerd: ${pids//$'\n'/ }"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.5
    fi
    if [ -s "$SAVED/container-ids" ]; then
        local cid sock
        sort -u "$SAVED/container-ids" | while read -r cid; do
            # containerd 1.6: /run/containerd/s/sha256(<grpc address>/<namespace>/<id>)
            sock=/run/containerd/s/$(printf '%s' "$CTRD_SOCK/k8s.io/$cid" | sha256sum | cut -c1-64)
            if [ -S "$sock" ]; then rm -f "$sock"; fi
        done
    fi
    rm -f "$SAVED/container-ids"
    local d
    for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/unified/kubepods; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    done

    # 4. network namespaces of our sandboxes, veths on our bridge, the bridge
    if [ -s "$netns_file" ]; then
        local ns
        sort -u "$netns_file" | while read -r ns; do
            [ -e "$ns" ] || continue
            umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
            rm -f "$ns"
        done
    fi
    rm -f "$netns_file"
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        local v
        for v in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
            ip link del "$v" 2>/dev/null || true
        done
        ip link del "$BRIDGE" 2>/dev/null || true
    fi
    rm -f "$SAVED/bridge-created"
    remove_iptables_additions

    # 5. mounts under our directories, then the per-run state (certificates, logs, cache stay)
    unmount_under "$RUNDIR"
    unmount_under "$STATE"
    rm -rf --one-file-system "$RUNDIR" "$STATE/etcd" "$STATE/kubelet" "$STATE/containerd" "$STATE/cni" \
        "$STATE/pod-logs" "$PIDS"
    # the kubelet's symlinks to our pod logs, libcni's cache entries of our network
    find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete 2>/dev/null || true
    rm -f /var/lib/cni/results/osbk8s-*
    # directories that did not exist before our first up: our files in them, then the directories
    if [ -f "$SAVED/created-dirs" ]; then
        local cd_
        while read -r cd_; do
            [ -d "$cd_" ] || continue
            case $cd_ in
            /var/lib/kubelet) rm -f /var/lib/kubelet/device-plugins/kubelet.sock
                rmdir /var/lib/kubelet/device-plugins 2>/dev/null || true ;;
            /var/lib/cni) rm -f /var/lib/cni/results/cni-loopback-*
                rmdir /var/lib/cni/results 2>/dev/null || true ;;
            esac
            rmdir "$cd_" 2>/dev/null || log "warning: $cd_ not empty, left in place"
        done <"$SAVED/created-dirs"
        rm -f "$SAVED/created-dirs"
    fi

    # 6. kernel tunables the kubelet changed
    if [ -f "$SAVED/sysctl" ]; then
        local k v
        while read -r k v; do
            if [ -w "/proc/sys/$k" ] && [ "$(cat "/proc/sys/$k")" != "$v" ]; then
                echo "$v" >"/proc/sys/$k" 2>/dev/null || log "warning: could not restore $k=$v"
            fi
        done <"$SAVED/sysctl"
        rm -f "$SAVED/sysctl"
    fi
    rm -f "$SAVED/iptables-chains"
    log "down"
}

# --------------------------------------------------------------------------------------------- load-image
do_load_image() {
    [ $# -ge 1 ] || die "usage: $0 load-image IMAGE..."
    comp_pid containerd >/dev/null || die "the cluster is not up (containerd not running)"
    local img
    for img in "$@"; do
        docker image inspect "$img" >/dev/null 2>&1 || die "no local Docker image $img"
        log "importing $img into containerd (namespace k8s.io)"
        docker save "$img" | ctr_ -n k8s.io images import - >&2 || die "import of $img failed"
    done
}

# ----------------------------------------------------------------------------------------------------- main
cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
up)
    need_root
    lock
    do_up
    ;;
down)
    need_root
    lock
    do_down
    ;;
apiserver-stop)
    need_root
    lock
    stop_comp kube-apiserver
    ;;
apiserver-start)
    need_root
    lock
    comp_pid kube-apiserver >/dev/null || start_apiserver
    ;;
status)
    st=$(cluster_state)
    echo "$st" >&3
    [ "$st" = up ]
    ;;
load-image)
    need_root
    lock
    do_load_image "$@"
    ;;
build)
    need_root
    lock
    ensure_packages
    build_binaries
    build_pause_image
    ;;
kubectl)
    exec "$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@" >&3 3>&-
    ;;
crictl)
    exec "$BIN/crictl" --config "$CONF/crictl.yaml" "$@" >&3 3>&-
    ;;
*)
    echo "usage: $0 up|down|status|load-image IMAGE...|apiserver-stop|apiserver-start|build|kubectl ARGS...|crictl ARGS..." >&2
    exit 2
    ;;
esac
