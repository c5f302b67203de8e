package agent

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/ipam"
	"go.uber.org/zap"
)

// removePeer releases every claim of a dead node, at once and
// cluster-wide, so its subnet can be reused before the lease TTL.
func (a *Agent) removePeer(name string) ([]string, int, error) {
	if name == a.cfg.NodeName {
		return nil, http.StatusBadRequest, fmt.Errorf("%s is this node; use 'loomctl leave' instead", name)
	}
	known := false
	for _, p := range a.members.Peers() {
		if p.Record.Name != name {
			continue
		}
		known = true
		if p.Live() {
			return nil, http.StatusConflict, fmt.Errorf("node %s is %s; stop its agent before removing it", name, p.State)
		}
	}
	if !known && len(a.leases.ClaimsBy(name)) == 0 {
		return nil, http.StatusNotFound, fmt.Errorf("no node named %s in membership or the lease table", name)
	}
	released, err := a.releaseClaims(name)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	a.log.Info("peer removed by operator; its subnets are free", zap.String("node", name), zap.Strings("subnets", released))
	a.trigger()
	return released, http.StatusOK, nil
}

// releaseClaims releases every claim of node name that is not released
// yet, here and (by gossip) cluster-wide, and returns their subnets.
func (a *Agent) releaseClaims(name string) ([]string, error) {
	var update []ipam.Claim
	var released []string
	now := time.Now()
	for _, c := range a.leases.ClaimsBy(name) {
		if c.State == ipam.LeaseReleased {
			continue
		}
		update = append(update, c.Release(now))
		released = append(released, c.Subnet.String())
	}
	if len(update) > 0 {
		if _, err := a.leases.Merge(update...); err != nil {
			return nil, err
		}
		a.broadcastClaims(update)
	}
	return released, nil
}

func (a *Agent) handleRemovePeer(w http.ResponseWriter, r *http.Request) {
	var req api.RemovePeerRequest
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	if !nodeNameRE.MatchString(req.Name) {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Errorf("%q is not a node name", req.Name))
		return
	}
	released, status, err := a.removePeer(req.Name)
	if err != nil {
		code := api.CodeInternal
		switch status {
		case http.StatusConflict:
			code = api.CodePeerAlive
		case http.StatusNotFound:
			code = api.CodeNotFound
		case http.StatusBadRequest:
			code = api.CodeBadRequest
		}
		writeError(w, status, code, err)
		return
	}
	writeJSON(w, http.StatusOK, api.RemovePeerResponse{Released: released})
}

func (a *Agent) handleSubnets(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	out := []api.Lease{}
	for _, c := range a.leases.Claims() {
		l := api.Lease{Subnet: c.Subnet.String(), Owner: c.Owner, State: string(c.State), Epoch: c.Epoch, Version: c.Version}
		switch {
		case c.Expires == 0:
		case c.State == ipam.LeaseReleased:
			l.Released = time.Unix(c.Expires, 0).UTC()
		default:
			l.Expires = time.Unix(c.Expires, 0).UTC()
		}
		if h, ok := a.leases.Holder(c.Subnet, now); ok && h.Owner == c.Owner {
			l.Holder = true
		}
		out = append(out, l)
	}
	writeJSON(w, http.StatusOK, out)
}

// handleLeave asks the main loop to leave; the loop answers once the node
// is out of the fabric, then the agent stops.
func (a *Agent) handleLeave(w http.ResponseWriter, r *http.Request) {
	done := make(chan error, 1)
	select {
	case a.leaveReq <- done:
	default:
		writeError(w, http.StatusConflict, api.CodeBadRequest, errors.New("a leave is already in progress"))
		return
	}
	if err := <-done; err != nil {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// leave releases this node's lease, removes its conflist, data plane and
// persisted lease, and leaves the gossip cleanly, so peers withdraw it at
// once and its subnet is free for others.
func (a *Agent) leave() error {
	a.log.Info("leaving the fabric")
	rec := a.record()
	rec.Leaving = true
	if err := a.members.SetLocalRecordSync(rec, 3*time.Second); err != nil {
		a.log.Warn("announce departure", zap.Error(err))
	}
	var errs []error
	released, err := a.releaseClaims(a.cfg.NodeName)
	errs = append(errs, err)
	if len(released) > 0 {
		// The release must reach peers before this node goes silent; push/pull
		// would carry it too, but only if someone still talks to us.
		a.members.WaitBroadcasts(5 * time.Second)
	}
	if err := os.Remove(filepath.Join(a.cfg.CNIConfDir, ConflistName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove conflist: %w", err))
	}
	a.dpMu.Lock()
	errs = append(errs, a.dp.Teardown())
	a.stateMu.Lock()
	a.subnet, a.applied = netip.Prefix{}, false
	a.stateMu.Unlock()
	a.dpMu.Unlock()
	errs = append(errs, a.store.DeleteLease())
	if err := a.members.Leave(5 * time.Second); err != nil {
		errs = append(errs, fmt.Errorf("leave gossip: %w", err))
	}
	err = errors.Join(errs...)
	if err != nil {
		a.log.Error("leave incomplete", zap.Error(err))
	} else {
		a.log.Info("left the fabric")
	}
	return err
}
