# Shared settings for hack/controlplane scripts (sourced, not run).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
INFERPOOL_CACHE=${INFERPOOL_CACHE:-$HOME/.cache/inferpool}
CP_KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
CP_HOME="$INFERPOOL_CACHE/controlplane/$CP_KEY"
CP_BIN="$CP_HOME/bin"
CP_TOOLS="kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm"
