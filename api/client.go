package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// ErrUnreachable wraps every failure to talk to the agent at all (socket
// missing, connection refused, timeout), as opposed to an answer that says
// no. The CNI plugin maps it to "try again later".
var ErrUnreachable = errors.New("agent unreachable")

// maxResponse bounds what the client reads from the agent.
const maxResponse = 4 << 20

// Client talks to loomd over its unix socket, one connection a request.
type Client struct {
	socket  string
	timeout time.Duration
}

// NewClient returns a client for the agent listening on socket; each
// request, answer included, takes at most timeout.
func NewClient(socket string, timeout time.Duration) *Client {
	return &Client{socket: socket, timeout: timeout}
}

// Socket is the path the client talks to.
func (c *Client) Socket() string { return c.socket }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = b
	}
	a, err := c.exchange(ctx, method, path, body)
	if err != nil {
		return fmt.Errorf("%w at %s (is loomd running?): %v", ErrUnreachable, c.socket, err)
	}
	if a.code/100 != 2 {
		e := &Error{HTTPStatus: a.code}
		if json.Unmarshal(a.body, e) != nil || e.Message == "" {
			e.Code, e.Message = CodeInternal, fmt.Sprintf("agent answered %s", a.status)
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(a.body, out); err != nil {
		return fmt.Errorf("decode agent answer to %s %s: %w", method, path, err)
	}
	return nil
}

// Allocate asks for (or returns the existing) address of an attachment.
func (c *Client) Allocate(ctx context.Context, r AllocateRequest) (Allocation, error) {
	var a Allocation
	err := c.do(ctx, "POST", "/v1/pods/allocate", r, &a)
	return a, err
}

// Attach tells the agent the pod's veth is in place, so it programs the
// host side and the pod's route.
func (c *Client) Attach(ctx context.Context, r PodRef) error {
	return c.do(ctx, "POST", "/v1/pods/attach", r, nil)
}

// Release frees an attachment's address and host side. Releasing an
// unknown attachment succeeds.
func (c *Client) Release(ctx context.Context, r PodRef) error {
	return c.do(ctx, "POST", "/v1/pods/release", r, nil)
}

// Get returns one attachment's allocation.
func (c *Client) Get(ctx context.Context, r PodRef) (Allocation, error) {
	var a Allocation
	q := url.Values{"containerID": {r.ContainerID}, "ifName": {r.IfName}}
	err := c.do(ctx, "GET", "/v1/pods/get?"+q.Encode(), nil, &a)
	return a, err
}

// Pods lists this node's allocations.
func (c *Client) Pods(ctx context.Context) ([]Allocation, error) {
	var out []Allocation
	err := c.do(ctx, "GET", "/v1/pods", nil, &out)
	return out, err
}

// Status returns the node's and its peers' status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, "GET", "/v1/status", nil, &s)
	return s, err
}

// RemovePeer releases a dead node's subnet cluster-wide (loomctl rmpeer).
func (c *Client) RemovePeer(ctx context.Context, name string) (RemovePeerResponse, error) {
	var out RemovePeerResponse
	err := c.do(ctx, "POST", "/v1/peers/remove", RemovePeerRequest{Name: name}, &out)
	return out, err
}

// Leave makes the node release its lease, remove its conflist and data
// plane, leave the gossip cleanly and stop (loomctl leave).
func (c *Client) Leave(ctx context.Context) error {
	return c.do(ctx, "POST", "/v1/leave", struct{}{}, nil)
}

// Subnets returns the lease table.
func (c *Client) Subnets(ctx context.Context) ([]Lease, error) {
	var out []Lease
	err := c.do(ctx, "GET", "/v1/subnets", nil, &out)
	return out, err
}

// GC releases every allocation not in valid (CNI GC).
func (c *Client) GC(ctx context.Context, valid []PodRef) (GCResponse, error) {
	var out GCResponse
	err := c.do(ctx, "POST", "/v1/pods/gc", GCRequest{Valid: valid}, &out)
	return out, err
}

// Keyring runs a gossip keyring operation on every live node.
func (c *Client) Keyring(ctx context.Context, r KeyringRequest) (KeyringResponse, error) {
	var out KeyringResponse
	err := c.do(ctx, "POST", "/v1/keyring", r, &out)
	return out, err
}

// Label changes an attached pod's labels and returns its allocation.
func (c *Client) Label(ctx context.Context, req LabelRequest) (Allocation, error) {
	var out Allocation
	err := c.do(ctx, "POST", "/v1/pods/label", req, &out)
	return out, err
}

// Policy returns the network policy in force on this node.
func (c *Client) Policy(ctx context.Context) (PolicyStatus, error) {
	var out PolicyStatus
	err := c.do(ctx, "GET", "/v1/policy", nil, &out)
	return out, err
}

// RotateWireGuardKey makes the node switch to a new WireGuard key pair.
func (c *Client) RotateWireGuardKey(ctx context.Context) (WireGuardRotateResponse, error) {
	var out WireGuardRotateResponse
	err := c.do(ctx, "POST", "/v1/wireguard/rotate", nil, &out)
	return out, err
}
