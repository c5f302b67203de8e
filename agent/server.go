package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/ipam"
	"github.com/loomnet/loom/overlay"
	"github.com/loomnet/loom/policy"
	"go.uber.org/zap"
)

// maxRequestBody bounds API requests; every legitimate one is tiny.
const maxRequestBody = 64 << 10

// serveAPI listens on the unix socket and returns a stop function.
func (a *Agent) serveAPI() (func(), error) {
	dir := filepath.Dir(a.cfg.Socket)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create socket dir %s: %w", dir, err)
	}
	// A socket file left by a killed agent would make Listen fail; remove
	// it unless another agent is answering on it.
	if c, err := net.DialTimeout("unix", a.cfg.Socket, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, flagErr("socket", "%s: another loomd is already serving there", a.cfg.Socket)
	}
	if err := os.Remove(a.cfg.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", a.cfg.Socket, err)
	}
	l, err := net.Listen("unix", a.cfg.Socket)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a.cfg.Socket, err)
	}
	if err := os.Chmod(a.cfg.Socket, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", a.cfg.Socket, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/pods/allocate", a.handleAllocate)
	mux.HandleFunc("POST /v1/pods/attach", a.handleAttach)
	mux.HandleFunc("POST /v1/pods/release", a.handleRelease)
	mux.HandleFunc("POST /v1/pods/gc", a.handleGC)
	mux.HandleFunc("GET /v1/pods/get", a.handleGet)
	mux.HandleFunc("GET /v1/pods", a.handlePods)
	mux.HandleFunc("POST /v1/pods/label", a.handleLabel)
	mux.HandleFunc("GET /v1/policy", a.handlePolicy)
	mux.HandleFunc("POST /v1/wireguard/rotate", a.handleWireGuardRotate)
	mux.HandleFunc("GET /v1/status", a.handleStatus)
	mux.HandleFunc("GET /v1/subnets", a.handleSubnets)
	mux.HandleFunc("POST /v1/peers/remove", a.handleRemovePeer)
	mux.HandleFunc("POST /v1/leave", a.handleLeave)
	mux.HandleFunc("POST /v1/keyring", a.handleKeyring)
	srv := &http.Server{
		Handler:           a.metrics.instrument(a.log, http.MaxBytesHandler(mux, maxRequestBody)),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
	}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("local API stopped", zap.Error(err))
		}
	}()
	a.stateMu.Lock()
	a.serving = true
	a.stateMu.Unlock()
	return func() {
		a.stateMu.Lock()
		a.serving = false
		a.stateMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code string, err error) {
	if rec, ok := w.(*apiResponse); ok {
		rec.failure = err
	}
	writeJSON(w, status, &api.Error{Code: code, Message: err.Error()})
}

// decode reads one JSON object strictly; unknown fields are an error so a
// misspelt field is reported rather than silently ignored.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed request body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("malformed request body: trailing data after the JSON object")
	}
	return nil
}

func validateRef(containerID, ifName string) error {
	if containerID == "" || len(containerID) > 1024 {
		return errors.New("containerID must be 1..1024 bytes")
	}
	if !api.ValidInterfaceName(ifName) {
		return fmt.Errorf("ifName %q is not a valid interface name", ifName)
	}
	return nil
}

func (a *Agent) toAPI(al ipam.Allocation) api.Allocation {
	subnet := a.currentSubnet()
	return api.Allocation{
		ContainerID: al.ContainerID, IfName: al.IfName,
		IP:      netip.PrefixFrom(al.IP, 32).String(),
		Gateway: overlay.PodGateway.String(), HostIf: al.HostIf, MTU: a.cfg.mtu,
		Subnet: al.Subnet.String(), Created: al.Created, Stale: !subnet.Contains(al.IP),
		PodMeta: api.PodMeta{Namespace: podRecord(al).Namespace, Name: al.Name, Labels: al.Labels, UID: al.UID},
	}
}

// validPodMeta defaults the namespace and checks what network policy
// will select the pod by, including that its record fits one gossip
// message.
func validPodMeta(m api.PodMeta) (api.PodMeta, error) {
	if m.Namespace == "" {
		m.Namespace = policy.DefaultNamespace
	}
	if err := policy.ValidPodMeta(m.Namespace, m.Name, m.Labels); err != nil {
		return m, err
	}
	if err := policy.ValidPodUID(m.UID); err != nil {
		return m, err
	}
	if _, err := policy.EncodeRecord(policy.PodRecord{Node: strings.Repeat("n", 64), IP: netip.IPv4Unspecified(), Version: 1,
		Namespace: m.Namespace, Name: m.Name, Labels: m.Labels, UID: m.UID}); err != nil {
		return m, err
	}
	return m, nil
}

// handleLabel changes a pod's labels; policies follow within a reconcile
// here, and on the nodes whose policies select the pod as a peer as soon
// as they hear of it (at once; other nodes within a gossip round).
func (a *Agent) handleLabel(w http.ResponseWriter, r *http.Request) {
	var req api.LabelRequest
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	al, ok := a.lookup(w, req.PodRef)
	if !ok {
		return
	}
	labels := map[string]string{}
	for k, v := range al.Labels {
		labels[k] = v
	}
	for k, v := range req.Set {
		labels[k] = v
	}
	for _, k := range req.Remove {
		delete(labels, k)
	}
	if _, err := validPodMeta(api.PodMeta{Namespace: al.Namespace, Name: al.Name, Labels: labels, UID: al.UID}); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	a.dpMu.Lock()
	al, err := a.store.SetLabels(req.ContainerID, req.IfName, labels)
	a.dpMu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
		return
	}
	a.log.Info("pod labels changed", zap.String("container", al.ContainerID), zap.String("ifname", al.IfName), zap.Any("labels", labels))
	a.publishLocalPod(al)
	a.trigger()
	writeJSON(w, http.StatusOK, a.toAPI(al))
}

func (a *Agent) handlePolicy(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.policyStatus())
}

func (a *Agent) handleAllocate(w http.ResponseWriter, r *http.Request) {
	var req api.AllocateRequest
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	if err := validateRef(req.ContainerID, req.IfName); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	subnet := a.currentSubnet()
	if !subnet.IsValid() {
		writeError(w, http.StatusServiceUnavailable, api.CodeNotReady, errNotReady)
		return
	}
	meta, err := validPodMeta(req.PodMeta)
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	if a.policy.pending() {
		writeError(w, http.StatusServiceUnavailable, api.CodeNotReady, a.policy.pendingError())
		return
	}
	hostIf := api.HostVethName(req.ContainerID, req.IfName)
	// An ADD right after a DEL of the same attachment would find the old
	// veth still being destroyed and fail to create its own.
	a.dp.WaitDetached(hostIf, req.Netns)
	al, existing, err := a.store.Allocate(subnet, ipam.Allocation{
		ContainerID: req.ContainerID, IfName: req.IfName, Netns: req.Netns,
		HostIf:    hostIf,
		Namespace: meta.Namespace, Name: meta.Name, Labels: meta.Labels, UID: meta.UID,
	})
	switch {
	case errors.Is(err, ipam.ErrSubnetExhausted):
		writeError(w, http.StatusConflict, api.CodeSubnetExhausted, err)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
		return
	}
	a.conntrack.SweepIfPending(al.IP)
	a.log.Debug("pod address allocated", zap.String("container", req.ContainerID), zap.String("ifname", req.IfName), zap.Stringer("ip", al.IP), zap.Bool("existing", existing))
	if !existing {
		a.publishLocalPod(al)
	}
	out := a.toAPI(al)
	out.Existing = existing
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) lookup(w http.ResponseWriter, ref api.PodRef) (ipam.Allocation, bool) {
	if err := validateRef(ref.ContainerID, ref.IfName); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return ipam.Allocation{}, false
	}
	al, ok, err := a.store.Get(ref.ContainerID, ref.IfName)
	if err != nil {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
		return al, false
	}
	if !ok {
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Errorf("no allocation for container %s interface %s", ref.ContainerID, ref.IfName))
		return al, false
	}
	return al, true
}

func (a *Agent) handleAttach(w http.ResponseWriter, r *http.Request) {
	var ref api.PodRef
	if err := decode(r, &ref); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	al, ok := a.lookup(w, ref)
	if !ok {
		return
	}
	subnet := a.currentSubnet()
	a.dpMu.Lock()
	err := a.dp.AttachPod(overlay.PodRoute{IP: al.IP, HostIf: al.HostIf}, subnet.Addr())
	a.dpMu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, fmt.Errorf("attach pod %s: %w", al.IP, err))
		return
	}
	// With policies, the pod may be selected by one: its rules must be in
	// force before ADD returns and the runtime starts the pod's processes.
	if a.policy.enabled() {
		applied, err := a.reconcilePolicy("pod attached")
		if err == nil && !applied {
			_, err = a.reconcile("pod attached")
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, api.CodeInternal, fmt.Errorf("program network policy for pod %s: %w", al.IP, err))
			return
		}
	}
	a.log.Info("pod attached", zap.String("container", al.ContainerID), zap.String("ifname", al.IfName),
		zap.Stringer("ip", al.IP), zap.String("host_if", al.HostIf))
	answerThenReconcile(w, a) // routes, neighbours; without policies, the pod's record too
}

// answerThenReconcile sends a 204 at once and only then asks for a
// reconcile: on a busy node the reconcile would otherwise compete with the
// answer the CNI plugin, and so the runtime, is waiting for.
func answerThenReconcile(w http.ResponseWriter, a *Agent) {
	w.WriteHeader(http.StatusNoContent)
	if err := http.NewResponseController(w).Flush(); err != nil {
		a.log.Debug("flush local API answer", zap.Error(err))
	}
	a.trigger()
}

func (a *Agent) handleRelease(w http.ResponseWriter, r *http.Request) {
	var ref api.PodRef
	if err := decode(r, &ref); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	if err := validateRef(ref.ContainerID, ref.IfName); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	// Cut the host side off first: if that fails the allocation stays, and
	// a retried DEL finds both again rather than a veth nobody accounts for.
	// Both under dpMu, so no reconcile sees the allocation without its veth.
	a.dpMu.Lock()
	netns := ""
	if al, ok, err := a.store.Get(ref.ContainerID, ref.IfName); err == nil && ok {
		netns = al.Netns
	}
	err := a.dp.DetachPod(api.HostVethName(ref.ContainerID, ref.IfName), netns)
	if err != nil {
		a.dpMu.Unlock()
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
		return
	}
	al, ok, err := a.store.Release(ref.ContainerID, ref.IfName)
	a.dpMu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
		return
	}
	if ok {
		a.forgetFlows(al.IP)
		a.log.Info("pod released", zap.String("container", al.ContainerID), zap.String("ifname", al.IfName), zap.Stringer("ip", al.IP))
		answerThenReconcile(w, a)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// detachOrphanVeths deletes, once at start, pod veths that are down and
// that no allocation accounts for: a DEL answered just before a restart
// leaves its veth down for a background deletion the restart cut short,
// and an ADD of the same attachment would find the name taken. A veth that
// is up is left alone (a live pod, whatever the store says: that is CNI
// GC's call). Veths are listed before the allocations are read: an
// allocation is stored before its veth is made, so a pod in the middle of
// ADD is never taken for an orphan. Called with dpMu held.
func (a *Agent) detachOrphanVeths() {
	names, err := a.dp.DownPodVeths()
	if err != nil {
		a.log.Warn("list pod veths", zap.Error(err))
		return
	}
	allocs, err := a.store.Allocations()
	if err != nil {
		a.log.Warn("read pod allocations", zap.Error(err))
		return
	}
	owned := map[string]bool{}
	for _, al := range allocs {
		owned[al.HostIf] = true
	}
	var orphans []string
	for _, name := range names {
		if owned[name] {
			continue
		}
		if err := a.dp.DetachPod(name, ""); err != nil {
			a.log.Warn("delete orphan pod veth", zap.String("host_if", name), zap.Error(err))
			continue
		}
		orphans = append(orphans, name)
	}
	if len(orphans) > 0 {
		a.log.Info("deleting pod veths no allocation accounts for", zap.Strings("host_ifs", orphans))
	}
}

// handleGC releases every allocation the runtime no longer knows, and
// deletes Loom host veths that belong to no allocation (a crash between
// creating a veth and recording it, or a pod whose DEL never came).
func (a *Agent) handleGC(w http.ResponseWriter, r *http.Request) {
	var req api.GCRequest
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	valid := map[api.PodRef]bool{}
	for _, v := range req.Valid {
		if err := validateRef(v.ContainerID, v.IfName); err != nil {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Errorf("valid attachment: %w", err))
			return
		}
		valid[v] = true
	}
	allocs, err := a.store.Allocations()
	if err != nil {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
		return
	}
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	resp := api.GCResponse{Released: []api.Allocation{}, Leftovers: []string{}}
	keep := map[string]bool{}
	for _, al := range allocs {
		if valid[api.PodRef{ContainerID: al.ContainerID, IfName: al.IfName}] {
			keep[al.HostIf] = true
			continue
		}
		if err := a.dp.DetachPod(al.HostIf, al.Netns); err != nil {
			writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
			return
		}
		if _, _, err := a.store.Release(al.ContainerID, al.IfName); err != nil {
			writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
			return
		}
		a.forgetFlows(al.IP)
		resp.Released = append(resp.Released, a.toAPI(al))
	}
	a.dp.WaitDetached("", "")
	leftovers, err := a.dp.PodVeths()
	if err != nil {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
		return
	}
	for _, name := range leftovers {
		if keep[name] {
			continue
		}
		if err := a.dp.DetachPod(name, ""); err != nil {
			writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
			return
		}
		resp.Leftovers = append(resp.Leftovers, name)
	}
	a.dp.WaitDetached("", "") // GC answers when the kernel is clean
	if len(resp.Released)+len(resp.Leftovers) > 0 {
		a.log.Info("garbage collected pod attachments", zap.Int("released", len(resp.Released)), zap.Strings("leftover_veths", resp.Leftovers))
		a.trigger()
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *Agent) handleGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	al, ok := a.lookup(w, api.PodRef{ContainerID: q.Get("containerID"), IfName: q.Get("ifName")})
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, a.toAPI(al))
}

func (a *Agent) handlePods(w http.ResponseWriter, r *http.Request) {
	allocs, err := a.store.Allocations()
	if err != nil {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
		return
	}
	out := make([]api.Allocation, 0, len(allocs))
	for _, al := range allocs {
		out = append(out, a.toAPI(al))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.status())
}

// notReady lists why the node cannot serve pods; empty means ready.
func (a *Agent) notReady() []string {
	// Read before stateMu: the policy state has a lock of its own.
	policiesPending, policyErr := a.policy.pending(), a.policy.lastLoadErr()
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	var why []string
	if !a.subnet.IsValid() {
		msg := "no subnet claimed yet"
		if a.claimErr != nil {
			msg += ": " + a.claimErr.Error()
		}
		why = append(why, msg)
	}
	if !a.applied {
		msg := "data plane not programmed yet"
		if a.lastErr != nil {
			msg += ": " + a.lastErr.Error()
		}
		why = append(why, msg)
	}
	if !a.serving {
		why = append(why, "local API not serving")
	}
	if a.underlayProblem != "" {
		why = append(why, a.underlayProblem)
	}
	if a.confErr != nil {
		why = append(why, "CNI config not written, so no pod can start: "+a.confErr.Error())
	}
	if policiesPending {
		msg := a.pendingPolicies()
		if policyErr != nil {
			msg += ": " + policyErr.Error()
		}
		why = append(why, msg)
	}
	return why
}

// addressUsage returns how many pod addresses are allocated and how many
// the node's subnet holds.
func (a *Agent) addressUsage() (used, total int) {
	allocs, _ := a.store.Allocations()
	if subnet := a.currentSubnet(); subnet.IsValid() {
		total = ipam.PodCapacity(subnet)
	}
	return len(allocs), total
}

func (a *Agent) status() api.Status {
	why := a.notReady()
	used, total := a.addressUsage()
	subnet := a.currentSubnet()
	st := api.Status{Node: api.NodeStatus{
		Name: a.cfg.NodeName, Version: Version, Underlay: a.cfg.advertise.String(),
		Subnet: prefixString(subnet), VTEPMAC: a.mac.String(), Backend: a.backendDescription(), MTU: a.cfg.mtu,
		Ready: len(why) == 0, NotReady: why, PodsUsed: used, PodsTotal: total,
		GossipEncrypted: len(a.cfg.keys) > 0,
	}}
	a.stateMu.Lock()
	programmed, excluded := a.programmed, a.excluded
	st.Node.Conflicts = a.conflicts
	if a.applied && a.lastErr != nil {
		st.Node.ReconcileError = a.lastErr.Error()
	}
	st.Node.WireGuardKey = wgKeyString(a.wgPublic)
	a.stateMu.Unlock()
	for _, p := range a.members.Peers() {
		st.Peers = append(st.Peers, api.PeerStatus{
			Name: p.Record.Name, Underlay: p.Record.Underlay.String(), Subnet: prefixString(p.Record.Subnet),
			VTEPMAC: p.Record.VTEPMAC.String(), State: p.State.String(), Since: p.Since.UTC().Truncate(time.Second),
			Programmed: programmed[p.Record.Name], Reason: excluded[p.Record.Name], Backend: backendFamily(p.Record.Backend),
			WireGuardKey: wgKeyString(p.Record.WGPublicKey), ClockOffsetSeconds: p.ClockOffset.Seconds(), MTU: p.Record.MTU,
		})
	}
	return st
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// backendDescription is the backend's name, with the WireGuard mode.
func (a *Agent) backendDescription() string {
	if a.wg != nil && a.wg.Mode() != "" {
		return a.backend.Name() + " (" + a.wg.Mode() + ")"
	}
	return a.backend.Name()
}

func wgKeyString(k []byte) string {
	if len(k) == 0 {
		return ""
	}
	return base64.StdEncoding.EncodeToString(k)
}
