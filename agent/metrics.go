package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/loomnet/loom/gossip"
	"github.com/loomnet/loom/ipam"
	"github.com/loomnet/loom/overlay"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// metrics are the agent's Prometheus series, in a registry of their own.
// Names follow Prometheus conventions: loom_ prefix, units in the name,
// _total for counters.
type metrics struct {
	reg          *prometheus.Registry
	gossip       *gossip.Metrics
	reconciles   *prometheus.CounterVec
	reconcileDur prometheus.Histogram
	conflicts    prometheus.Counter
	drift        *prometheus.CounterVec
	entries      *prometheus.GaugeVec
	cniRequests  *prometheus.CounterVec
	cniDuration  *prometheus.HistogramVec
	dropped      droppedCounts
	// policyLoadErrors counts policy reloads that failed.
	policyLoadErrors prometheus.Counter
	conntrackDeleted prometheus.Counter
}

// droppedCounts turns the rule counters, which restart from zero whenever
// the table is rewritten, into monotonic totals.
type droppedCounts struct {
	// mu guards last and sum.
	mu        sync.Mutex
	last, sum map[string]uint64
}

func (d *droppedCounts) total(fw *overlay.NFTables, chain string) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last == nil {
		d.last, d.sum = map[string]uint64{}, map[string]uint64{}
	}
	if fw != nil {
		if now, err := fw.Dropped(); err == nil {
			for c, n := range now {
				if n >= d.last[c] {
					d.sum[c] += n - d.last[c]
				} else {
					d.sum[c] += n
				}
				d.last[c] = n
			}
		}
	}
	return d.sum[chain]
}

var kernelKinds = []string{"link", "addr", "neigh", "route"}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		reg:    prometheus.NewRegistry(),
		gossip: gossip.NewMetrics(),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_reconcile_runs_total", Help: "Data plane reconciliations by trigger and result.",
		}, []string{"reason", "result"}),
		reconcileDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "loom_reconcile_duration_seconds", Help: "Time to reconcile the data plane.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loom_subnet_conflicts_total", Help: "Times this node lost its subnet to an older lease.",
		}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_drift_repaired_total", Help: "Kernel entries (and loomd's CNI config) added or removed to repair drift nobody announced (resync, kernel change), by kind.",
		}, []string{"kind"}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "loom_kernel_entries", Help: "Entries the data plane holds after the last reconcile, by kind.",
		}, []string{"kind"}),
		cniRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_cni_requests_total", Help: "Local API requests from the CNI plugin and loomctl, by CNI verb and result.",
		}, []string{"verb", "result"}),
		cniDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "loom_cni_request_duration_seconds", Help: "Local API request latency by CNI verb.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"verb"}),
	}
	m.conntrackDeleted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "loom_conntrack_entries_deleted_total", Help: "Connection tracking entries deleted because their pod address was given up or its subnet changed hands.",
	})
	m.reg.MustRegister(m.conntrackDeleted)
	m.policyLoadErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "loom_policy_load_errors_total", Help: "Network policy reloads that failed; the last good set stayed in force.",
	})
	m.reg.MustRegister(m.policyLoadErrors)
	m.reg.MustRegister(m.reconciles, m.reconcileDur, m.conflicts, m.drift, m.entries, m.cniRequests, m.cniDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "loom_build_info", Help: "Always 1; labels carry the build.",
			ConstLabels: prometheus.Labels{"version": Version},
		}, func() float64 { return 1 }),
	)
	m.reg.MustRegister(m.gossip.Collectors()...)
	for _, kind := range kernelKinds {
		kind := kind
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "loom_netlink_writes_total", Help: "Kernel writes made by the data plane, by kind.",
				ConstLabels: prometheus.Labels{"kind": kind},
			}, func() float64 { return float64(a.kernel.WritesByKind()[kind]) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "loom_netlink_errors_total", Help: "Kernel writes that failed, by kind.",
				ConstLabels: prometheus.Labels{"kind": kind},
			}, func() float64 { return float64(a.kernel.ErrorsByKind()[kind]) }),
		)
	}
	for _, st := range []gossip.PeerState{gossip.PeerAlive, gossip.PeerSuspect, gossip.PeerDead, gossip.PeerLeft} {
		st := st
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "loom_peers", Help: "Known peers by state.", ConstLabels: prometheus.Labels{"state": st.String()},
		}, func() float64 {
			if a.members == nil {
				return 0
			}
			n := 0
			for _, p := range a.members.Peers() {
				if p.State == st {
					n++
				}
			}
			return float64(n)
		}))
	}
	for _, st := range []ipam.LeaseState{ipam.LeaseActive, ipam.LeaseReserved, ipam.LeaseReleased} {
		st := st
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "loom_subnet_leases", Help: "Claims in the lease table by state.", ConstLabels: prometheus.Labels{"state": string(st)},
		}, func() float64 {
			n := 0
			for _, c := range a.leases.Claims() {
				if c.State == st {
					n++
				}
			}
			return float64(n)
		}))
	}
	for _, chain := range []string{overlay.ChainVXLANIngress, overlay.ChainPodAntiSpoof, overlay.ChainPodToHost, overlay.ChainPolicy} {
		chain := chain
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "loom_firewall_dropped_packets_total", Help: "Packets Loom's nftables table dropped: VXLAN from non-members, pod source spoofing, pods reaching the node's own ports, network policy.",
			ConstLabels: prometheus.Labels{"chain": chain},
		}, func() float64 { return float64(m.dropped.total(a.fw, chain)) }))
	}
	for _, mode := range []string{"", overlay.WireGuardKernel, overlay.WireGuardUserspace} {
		mode := mode
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "loom_backend_info", Help: "1 for the data plane backend in use and its mode (WireGuard: kernel or userspace).",
			ConstLabels: prometheus.Labels{"mode": mode},
		}, func() float64 {
			got := ""
			if a.wg != nil {
				got = a.wg.Mode()
			}
			if got == mode {
				return 1
			}
			return 0
		}))
	}
	for _, st := range []string{"live", "deleted"} {
		st := st
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "loom_pod_directory_records", Help: "Pod records in the gossiped pod directory (every node's pods, for network policy): live, and deleted (tombstones).",
			ConstLabels: prometheus.Labels{"state": st},
		}, func() float64 {
			live, deleted := a.policy.dir.Count()
			if st == "live" {
				return float64(live)
			}
			return float64(deleted)
		}))
	}
	for _, st := range []string{"used", "free"} {
		st := st
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "loom_pod_addresses", Help: "Pod addresses of this node's subnet, used and free.", ConstLabels: prometheus.Labels{"state": st},
		}, func() float64 {
			used, total := a.addressUsage()
			if st == "used" {
				return float64(used)
			}
			return float64(total - used)
		}))
	}
	return m
}

// observeRun counts one reconcile, whole or of the policy alone (see
// reconcilePolicy), and its duration.
func (m *metrics) observeRun(reason string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.reconciles.WithLabelValues(reason, result).Inc()
	m.reconcileDur.Observe(d.Seconds())
}

// observeReconcile records one reconcile. Writes made when no membership or
// lease change asked for them are drift: someone changed the kernel.
func (m *metrics) observeReconcile(reason string, d time.Duration, res overlay.Result, desired overlay.Desired, err error) {
	m.observeRun(reason, d, err)
	if reason == "resync" || reason == "change" || reason == "retry" {
		for kind, n := range res.Added {
			m.drift.WithLabelValues(kind).Add(float64(n))
		}
		for kind, n := range res.Removed {
			m.drift.WithLabelValues(kind).Add(float64(n))
		}
		if res.DeviceChanged {
			m.drift.WithLabelValues("device").Inc()
		}
	}
	if res.ForwardingRestored { // set at start, so always someone else's change
		m.drift.WithLabelValues("ip_forward").Inc()
	}
	if err == nil {
		m.entries.WithLabelValues("neigh").Set(float64(len(desired.Peers)))
		m.entries.WithLabelValues("fdb").Set(float64(len(desired.Peers)))
		m.entries.WithLabelValues("peer_route").Set(float64(len(desired.Peers)))
		m.entries.WithLabelValues("pod_route").Set(float64(len(desired.Pods)))
	}
}

// apiVerbs maps local API routes to the CNI verb (or loomctl command) they
// serve, for the request metrics.
var apiVerbs = map[string]string{
	"/v1/pods/allocate": "ADD", "/v1/pods/attach": "ADD", "/v1/pods/release": "DEL",
	"/v1/pods/get": "CHECK", "/v1/pods/gc": "GC", "/v1/status": "STATUS",
}

// instrument counts and times every local API request, and logs the ones
// that failed inside the agent (a full state disk, a netlink error) with
// their reason: the runtime that sent them logs them on its side, often on
// another machine than the operator reading loomd's log.
func (m *metrics) instrument(log *zap.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		verb, ok := apiVerbs[r.URL.Path]
		if !ok {
			verb = "other"
		}
		rec := &apiResponse{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		next.ServeHTTP(rec, r)
		result := "ok"
		if rec.status >= 400 {
			result = "error"
		}
		m.cniRequests.WithLabelValues(verb, result).Inc()
		m.cniDuration.WithLabelValues(verb).Observe(time.Since(start).Seconds())
		if rec.status == http.StatusInternalServerError {
			log.Warn("local API request failed", zap.String("request", r.Method+" "+r.URL.Path),
				zap.String("verb", verb), zap.Error(rec.failure))
		}
	})
}

// apiResponse records what a local API handler answered.
type apiResponse struct {
	http.ResponseWriter
	status int
	// failure is the error writeError answered with, if any.
	failure error
}

func (s *apiResponse) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's writer (to
// flush an answer before the handler goes on).
func (s *apiResponse) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// serveMetrics serves /metrics, /healthz and /readyz on --metrics-addr.
func (a *Agent) serveMetrics() (func(), error) {
	host, _, _ := net.SplitHostPort(a.cfg.MetricsAddr)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		a.log.Warn("metrics and health are served beyond loopback", zap.String("addr", a.cfg.MetricsAddr))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := a.notReady(); len(why) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(why, "\n"))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	l, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return nil, flagErr("metrics-addr", "listen on %s: %v", a.cfg.MetricsAddr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
