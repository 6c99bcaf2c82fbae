#!/usr/bin/env bash
# cleanup-node-disk 1.0.0 — entrypoint of the Job-engine workflow.
#
# Input comes only from the environment, set by the reconciler from the execution:
#   TARGET_RESOURCE      Node/<name>                      (always set, reserved)
#   MIN_POD_AGE_MINUTES  only delete terminated Pods older than this      (default 60)
#   PRUNE_IMAGES         "true": run `crictl rmi --prune` on the Node     (default false)
#   PRUNE_NAMESPACE      namespace of the short-lived prune Pod           (default kubernaut-node-maintenance)
#   WAIT_TIMEOUT         how long to wait for DiskPressure to clear       (default 10m)
#
# Values are validated, then used only as quoted arguments or jq --arg data, never as code.
# The Job runs with a read-only root filesystem: nothing here writes files (kubectl's
# discovery cache write fails silently; here-strings are small enough to use pipes).
# Exit 0: DiskPressure is gone (or was already gone). Exit 1: it is not; the message says why.
#
# RBAC for the Job's ServiceAccount: get/watch nodes; list/delete pods cluster-wide; and, with
# PRUNE_IMAGES=true, create/get/delete pods and get pods/log in PRUNE_NAMESPACE. That namespace
# must allow hostPath Pods (pod-security.kubernetes.io/enforce: privileged); nothing else does.
set -euo pipefail

MIN_POD_AGE_MINUTES="${MIN_POD_AGE_MINUTES:-60}"
PRUNE_IMAGES="${PRUNE_IMAGES:-false}"
PRUNE_NAMESPACE="${PRUNE_NAMESPACE:-kubernaut-node-maintenance}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-10m}"
# Any small image with chroot works: the prune runs the Node's own crictl under /host.
PRUNE_POD_IMAGE="docker.io/library/busybox:1.36.1"

log() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# --- validate input --------------------------------------------------------------------
IFS=/ read -r kind node rest <<<"${TARGET_RESOURCE:-}"
if [[ -n "${rest}" || -z "${node}" || "${kind}" != "Node" ]]; then
  die "TARGET_RESOURCE '${TARGET_RESOURCE:-}' must be Node/<name>"
fi
[[ "${MIN_POD_AGE_MINUTES}" =~ ^[0-9]{1,5}$ ]] \
  || die "MIN_POD_AGE_MINUTES '${MIN_POD_AGE_MINUTES}' must be a whole number of minutes"
[[ "${PRUNE_IMAGES}" == "true" || "${PRUNE_IMAGES}" == "false" ]] \
  || die "PRUNE_IMAGES must be \"true\" or \"false\", not '${PRUNE_IMAGES}'"
[[ "${PRUNE_NAMESPACE}" =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] \
  || die "PRUNE_NAMESPACE '${PRUNE_NAMESPACE}' is not a namespace name"
[[ -n "${WAIT_TIMEOUT}" && "${WAIT_TIMEOUT}" =~ ^([0-9]+h)?([0-9]+m)?([0-9]+s)?$ ]] \
  || die "WAIT_TIMEOUT '${WAIT_TIMEOUT}' is not a duration such as 10m"

disk_pressure() {
  kubectl get node "${node}" -o json \
    | jq -r '[.status.conditions[] | select(.type == "DiskPressure")][0] | "\(.status) \(.message // "")"'
}

# --- 1. observe ------------------------------------------------------------------------
state="$(disk_pressure)"
log "Node ${node}: DiskPressure=${state}"
if [[ "${state}" != True* ]]; then
  log "Node ${node} is not under DiskPressure any more: nothing to do, nothing deleted"
  exit 0
fi

# --- 2. delete terminated Pods (Succeeded, Failed, Evicted) on this Node -----------------
# Their logs and writable layers stay on the Node's disk until the Pod object is gone.
pods_json="$(kubectl get pods --all-namespaces --field-selector "spec.nodeName=${node}" -o json)"
mapfile -t victims < <(
  printf '%s' "${pods_json}" \
    | jq -r --argjson min "${MIN_POD_AGE_MINUTES}" '
        (now - $min * 60) as $cutoff
        | .items[]
        | select(.status.phase == "Succeeded" or .status.phase == "Failed")
        | select(.metadata.deletionTimestamp == null)
        | select(((.status.startTime // .metadata.creationTimestamp) | fromdateiso8601) < $cutoff)
        | "\(.metadata.namespace)\t\(.metadata.name)\t\(.status.phase)/\(.status.reason // "-")"')
log "${#victims[@]} terminated Pods older than ${MIN_POD_AGE_MINUTES}m on ${node}"
deleted=0
for line in "${victims[@]}"; do
  IFS=$'\t' read -r ns pod why <<<"${line}"
  if kubectl delete pod "${pod}" --namespace "${ns}" --wait=false --ignore-not-found >/dev/null; then
    log "deleted ${ns}/${pod} (${why})"
    deleted=$((deleted + 1))
  else
    log "WARNING: could not delete ${ns}/${pod} (${why}); continuing"
  fi
done

# --- 3. optionally prune unused images with the Node's crictl --------------------------
if [[ "${PRUNE_IMAGES}" == "true" ]]; then
  manifest="$(jq -n --arg node "${node}" --arg ns "${PRUNE_NAMESPACE}" --arg image "${PRUNE_POD_IMAGE}" '{
    apiVersion: "v1", kind: "Pod",
    metadata: {generateName: "prune-images-", namespace: $ns,
               labels: {"app.kubernetes.io/managed-by": "kubernaut-workflows",
                        "kubernaut.ai/workflow-id": "cleanup-node-disk"}},
    spec: {
      nodeName: $node, restartPolicy: "Never", automountServiceAccountToken: false,
      activeDeadlineSeconds: 300,
      # The kubelet only admits new Pods on a DiskPressure Node if they tolerate the taint.
      tolerations: [{key: "node.kubernetes.io/disk-pressure", operator: "Exists", effect: "NoSchedule"}],
      containers: [{
        name: "prune", image: $image,
        command: ["chroot", "/host", "crictl", "rmi", "--prune"],
        securityContext: {runAsUser: 0, allowPrivilegeEscalation: false,
                          capabilities: {drop: ["ALL"], add: ["SYS_CHROOT"]}},
        resources: {requests: {cpu: "50m", memory: "32Mi"}, limits: {memory: "128Mi"}},
        volumeMounts: [{name: "host", mountPath: "/host"}]}],
      volumes: [{name: "host", hostPath: {path: "/", type: "Directory"}}]}}')"
  prune_pod="$(printf '%s' "${manifest}" | kubectl create -f - -o name)"
  trap 'kubectl delete --namespace "${PRUNE_NAMESPACE}" "${prune_pod}" --ignore-not-found --wait=false >/dev/null || true' EXIT
  log "started ${PRUNE_NAMESPACE}/${prune_pod#pod/} on ${node}: crictl rmi --prune"
  phase=Pending
  for _ in $(seq 1 60); do
    phase="$(kubectl get --namespace "${PRUNE_NAMESPACE}" "${prune_pod}" -o jsonpath='{.status.phase}')"
    [[ "${phase}" == "Succeeded" || "${phase}" == "Failed" ]] && break
    sleep 5
  done
  kubectl logs --namespace "${PRUNE_NAMESPACE}" "${prune_pod}" --tail 50 || true
  [[ "${phase}" == "Succeeded" ]] || die "image prune Pod ended in phase ${phase}; see its logs above"
fi

# --- 4. wait for the kubelet to lift DiskPressure -------------------------------------
# The kubelet keeps the condition for --eviction-pressure-transition-period (default 5m)
# after usage drops below the threshold, hence the 10m default.
log "deleted ${deleted} Pods; waiting up to ${WAIT_TIMEOUT} for DiskPressure=False on ${node}"
if kubectl wait node "${node}" --for condition=DiskPressure=False --timeout "${WAIT_TIMEOUT}" >/dev/null; then
  log "Node ${node}: DiskPressure cleared"
  exit 0
fi
hint="consider cordon-drain-node and replacing the Node, or a larger root volume"
if [[ "${PRUNE_IMAGES}" != "true" ]]; then
  hint="retry with PRUNE_IMAGES=\"true\" (a new execution), or ${hint}"
fi
die "Node ${node} is still under DiskPressure after ${WAIT_TIMEOUT} ($(disk_pressure)): ${hint}"
