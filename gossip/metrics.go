package gossip

import (
	"strings"
	"sync"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the gossip layer's Prometheus series.
type Metrics struct {
	// Bytes counts gossip bytes by direction (sent, received) and transport.
	Bytes *prometheus.CounterVec
	// Messages counts memberlist protocol messages by type, and Loom's own
	// messages (types "state" and "pods") by direction: sent (queued for
	// gossip), direct (sent at once to chosen nodes) and received.
	Messages *prometheus.CounterVec
	// KeyFailures counts packets no installed key could decrypt or verify:
	// a peer with a wrong key, or someone probing the gossip port.
	KeyFailures prometheus.Counter
	// Rejected counts peer records refused by validation.
	Rejected prometheus.Counter
	// ClockOffset is the largest offset between a peer's clock and this
	// node's seen at the peers' last push/pull.
	ClockOffset prometheus.Gauge
	// StateBytes is the size of this node's last push/pull state.
	StateBytes prometheus.Gauge
}

// NewMetrics returns unregistered gossip metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_gossip_bytes_total", Help: "Gossip bytes by direction and transport.",
		}, []string{"direction", "transport"}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_gossip_messages_total", Help: "Gossip messages by direction and type.",
		}, []string{"direction", "type"}),
		KeyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loom_gossip_key_failures_total", Help: "Gossip packets rejected because no installed key could decrypt or verify them.",
		}),
		Rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loom_gossip_rejected_records_total", Help: "Peer records refused: malformed, or failing validation (underlay allow-list, subnet outside the cluster).",
		}),
		ClockOffset: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "loom_gossip_max_peer_clock_offset_seconds", Help: "Largest difference between a peer's clock and this node's at their last push/pull; above 30 s loomd warns (leases read wall clocks).",
		}),
		StateBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "loom_gossip_state_bytes", Help: "Size of this node's last full-sync (push/pull) state, large ones compressed; peers refuse more than 20 MiB.",
		}),
	}
}

// Collectors returns every series, for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Bytes, m.Messages, m.KeyFailures, m.Rejected, m.ClockOffset, m.StateBytes}
}

var installSink sync.Once

// installMemberlistSink routes memberlist's go-metrics counters (it has no
// other way to report traffic) into m. go-metrics is process-global, which
// fits: one loomd runs one memberlist.
func installMemberlistSink(m *Metrics) {
	installSink.Do(func() {
		conf := gometrics.DefaultConfig("loom")
		conf.EnableHostname = false
		conf.EnableRuntimeMetrics = false
		conf.TimerGranularity = time.Millisecond
		gometrics.NewGlobal(conf, &memberlistSink{m: m})
	})
}

// memberlistSink implements go-metrics' MetricSink for the counters that
// matter to operators and drops the rest.
type memberlistSink struct{ m *Metrics }

func (s *memberlistSink) IncrCounter(key []string, val float32) { s.count(key, val) }
func (s *memberlistSink) IncrCounterWithLabels(key []string, val float32, _ []gometrics.Label) {
	s.count(key, val)
}
func (s *memberlistSink) SetGauge([]string, float32)                               {}
func (s *memberlistSink) SetGaugeWithLabels([]string, float32, []gometrics.Label)  {}
func (s *memberlistSink) EmitKey([]string, float32)                                {}
func (s *memberlistSink) AddSample([]string, float32)                              {}
func (s *memberlistSink) AddSampleWithLabels([]string, float32, []gometrics.Label) {}

func (s *memberlistSink) count(key []string, val float32) {
	// Keys arrive as [loom memberlist <a> <b>].
	i := 0
	for i < len(key) && key[i] != "memberlist" {
		i++
	}
	k := key[i:]
	if len(k) != 3 {
		return
	}
	switch {
	case (k[1] == "udp" || k[1] == "tcp") && (k[2] == "sent" || k[2] == "received"):
		s.m.Bytes.WithLabelValues(k[2], k[1]).Add(float64(val))
	case k[1] == "msg":
		s.m.Messages.WithLabelValues("received", strings.ToLower(k[2])).Add(float64(val))
	}
}
