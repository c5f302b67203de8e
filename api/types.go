// Package api is the agent's local API: the request and response types and
// a client. The CNI plugin and loomctl import only this package, so they
// link neither netlink-heavy agent code nor memberlist.
package api

import "time"

// DefaultSocket is where loomd listens unless told otherwise.
const DefaultSocket = "/run/loom/loom.sock"

// AllocateRequest asks for a pod address for one CNI attachment.
type AllocateRequest struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	Netns       string `json:"netns,omitempty"`
	PodMeta
}

// PodMeta is what network policies select a pod by. The CNI plugin fills
// it from CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, LOOM_POD_LABELS).
type PodMeta struct {
	// Namespace defaults to "default".
	Namespace string            `json:"namespace,omitempty"`
	Name      string            `json:"name,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	// UID is the Pod object's UID (K8S_POD_UID) when the runtime says it.
	UID string `json:"uid,omitempty"`
}

// LabelRequest changes an attached pod's labels: Set adds or overwrites,
// Remove deletes keys.
type LabelRequest struct {
	PodRef
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// PodRef names one attachment.
type PodRef struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// Allocation is a pod's address and how to wire it.
type Allocation struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// IP is the pod address in CIDR form with a /32 mask.
	IP string `json:"ip"`
	// Gateway is the link-local default gateway the host side answers for.
	Gateway string `json:"gateway"`
	// HostIf is the name the host end of the pod's veth must have.
	HostIf string `json:"hostIf"`
	MTU    int    `json:"mtu"`
	// Subnet is the node subnet the address came from.
	Subnet string `json:"subnet"`
	// Created is when the address was first handed out.
	Created time.Time `json:"created"`
	// Stale is set when the address belongs to a subnet this node no
	// longer owns (it lost a conflict); CHECK fails for such pods.
	Stale bool `json:"stale,omitempty"`
	// Existing is set when the attachment already had this address: the
	// ADD is a retry, and a failure must not release what was there.
	Existing bool `json:"existing,omitempty"`
	PodMeta
}

// GCRequest lists the attachments the runtime still knows; the agent
// releases every allocation and host-side leftover not among them.
type GCRequest struct {
	Valid []PodRef `json:"valid"`
}

// GCResponse says what GC removed.
type GCResponse struct {
	Released []Allocation `json:"released"`
	// Leftovers are host veths of Loom's with no allocation, deleted.
	Leftovers []string `json:"leftovers"`
}

// NodeStatus describes the local node.
type NodeStatus struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Underlay string `json:"underlay"`
	Subnet   string `json:"subnet"`
	VTEPMAC  string `json:"vtepMAC"`
	Backend  string `json:"backend"`
	// MTU is the node's overlay and pod MTU.
	MTU   int  `json:"mtu"`
	Ready bool `json:"ready"`
	// NotReady lists why the node cannot serve pods yet.
	NotReady []string `json:"notReady,omitempty"`
	// ReconcileError is why the last reconcile failed once the node was
	// ready: it stays ready with the data plane it has, and loomd
	// retries. Empty after a reconcile that succeeded.
	ReconcileError string `json:"reconcileError,omitempty"`
	PodsUsed       int    `json:"podsUsed"`
	PodsTotal      int    `json:"podsTotal"`
	// Conflicts counts the times this node lost its subnet to an older
	// lease after a partition healed.
	Conflicts int `json:"conflicts"`
	// GossipEncrypted is false when the agent runs with --insecure-gossip.
	GossipEncrypted bool `json:"gossipEncrypted"`
	// WireGuardKey is the node's WireGuard public key (base64).
	WireGuardKey string `json:"wireguardKey,omitempty"`
}

// PeerStatus describes one remote node.
type PeerStatus struct {
	Name     string    `json:"name"`
	Underlay string    `json:"underlay"`
	Subnet   string    `json:"subnet"`
	VTEPMAC  string    `json:"vtepMAC"`
	State    string    `json:"state"`
	Since    time.Time `json:"since"`
	// Programmed is true when this node's kernel routes to the peer.
	Programmed bool `json:"programmed"`
	// Reason says why a known peer is not programmed.
	Reason string `json:"reason,omitempty"`
	// Backend is the data plane the peer runs.
	Backend string `json:"backend,omitempty"`
	// WireGuardKey is the peer's WireGuard public key (base64).
	WireGuardKey string `json:"wireguardKey,omitempty"`
	// ClockOffsetSeconds is how far the peer's clock was ahead of this
	// node's (negative: behind) at their last push/pull.
	ClockOffsetSeconds float64 `json:"clockOffsetSeconds,omitempty"`
	// MTU is the peer's pod MTU; the route to a peer with a smaller one
	// than this node's carries it. 0 from agents that do not say.
	MTU int `json:"mtu,omitempty"`
}

// Status is the answer to GET /v1/status.
type Status struct {
	Node  NodeStatus   `json:"node"`
	Peers []PeerStatus `json:"peers"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	// Code is a stable machine-readable reason, e.g. "subnet_exhausted".
	Code    string `json:"code"`
	Message string `json:"error"`
	// HTTPStatus is filled in by the client.
	HTTPStatus int `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// Error codes.
const (
	CodeBadRequest      = "bad_request"
	CodeNotReady        = "not_ready"
	CodeSubnetExhausted = "subnet_exhausted"
	CodeNotFound        = "not_found"
	CodeInternal        = "internal"
)

// RemovePeerRequest asks the agent to release a dead node's subnet.
type RemovePeerRequest struct {
	Name string `json:"name"`
}

// RemovePeerResponse lists the subnets released.
type RemovePeerResponse struct {
	Released []string `json:"released"`
}

// Lease is one row of the lease table.
type Lease struct {
	Subnet  string    `json:"subnet"`
	Owner   string    `json:"owner"`
	State   string    `json:"state"`
	Epoch   uint64    `json:"epoch"`
	Version uint64    `json:"version"`
	Expires time.Time `json:"expires,omitempty"`
	// Released is when a released claim was released (zero if the
	// releasing agent did not say); the table forgets it two lease TTLs
	// later.
	Released time.Time `json:"released,omitempty"`
	// Holder is true for the claim that currently holds the subnet.
	Holder bool `json:"holder"`
}

// More error codes.
const (
	CodePeerAlive = "peer_alive"
)

// KeyringRequest is a cluster-wide gossip keyring operation: list,
// install, use or remove. Key is the base64 key (not for list).
type KeyringRequest struct {
	Op  string `json:"op"`
	Key string `json:"key,omitempty"`
}

// KeyringNodeResult is one node's answer.
type KeyringNodeResult struct {
	Node  string `json:"node"`
	Error string `json:"error,omitempty"`
	// Keys are fingerprints (sha256:...) of the node's keys, primary first.
	Keys []string `json:"keys"`
}

// KeyringResponse lists every node's answer.
type KeyringResponse struct {
	Results []KeyringNodeResult `json:"results"`
}

// PolicyStatus is the answer to GET /v1/policy: where policies come from,
// whether the last load worked, and what is enforced for each local pod.
type PolicyStatus struct {
	// Source is kubernetes, files or none.
	Source string `json:"source"`
	// Policies lists the policies in force, as namespace/name.
	Policies []string `json:"policies"`
	// Error is the last load failure; the previous good set stays in force.
	Error string `json:"error,omitempty"`
	// Pending says why the policies to enforce are not known yet (none
	// loaded since loomd started) and what the firewall does meanwhile;
	// Policies and Pods are then empty.
	Pending  string    `json:"pending,omitempty"`
	LoadedAt time.Time `json:"loadedAt,omitempty"`
	// Pods are the local pods some policy selects.
	Pods     []PodPolicy `json:"pods"`
	Warnings []string    `json:"warnings,omitempty"`
}

// PodPolicy is what is enforced for one local pod. A direction that is not
// isolated allows everything; an isolated one allows only its list.
type PodPolicy struct {
	Namespace       string   `json:"namespace"`
	Name            string   `json:"name"`
	IP              string   `json:"ip"`
	Policies        []string `json:"policies"`
	IngressIsolated bool     `json:"ingressIsolated"`
	Ingress         []string `json:"ingress"`
	EgressIsolated  bool     `json:"egressIsolated"`
	Egress          []string `json:"egress"`
}

// WireGuardRotateResponse carries the node's new WireGuard public key.
type WireGuardRotateResponse struct {
	PublicKey string `json:"publicKey"`
}
