package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/loomnet/loom/integration/rig"
)

// RefConflist is the reference chain Loom's plugin is compared with: the
// bridge plugin with host-local IPAM, storing its state under dataDir.
func RefConflist(dataDir string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"refbr","plugins":[{"type":"bridge","bridge":"refbr0","isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","subnet":"10.98.0.0/24","dataDir":%q}}]}`, dataDir))
}

// CNILatency times n ADDs and DELs through libcni with list on node n,
// each in a fresh pod namespace, and returns p50/p99 of both in ms.
func CNILatency(n *rig.Node, list *libcni.NetworkConfigList, count int) (addP50, addP99, delP50, delP99 float64, err error) {
	cni := n.CNIClient("bench-cache")
	var adds, dels []float64
	for i := 0; i < count; i++ {
		p, err := n.NewPodNS(fmt.Sprintf("lat-%s-%d", list.Name, i))
		if err != nil {
			return 0, 0, 0, 0, err
		}
		rt := p.RuntimeConf()
		start := time.Now()
		if _, err := cni.AddNetworkList(context.Background(), list, rt); err != nil {
			return 0, 0, 0, 0, fmt.Errorf("%s ADD: %w", list.Name, err)
		}
		adds = append(adds, ms(time.Since(start)))
		start = time.Now()
		if err := cni.DelNetworkList(context.Background(), list, rt); err != nil {
			return 0, 0, 0, 0, fmt.Errorf("%s DEL: %w", list.Name, err)
		}
		dels = append(dels, ms(time.Since(start)))
		rig.Run("ip", "netns", "del", p.NS)
	}
	a50, a99 := pct(adds)
	d50, d99 := pct(dels)
	return a50, a99, d50, d99, nil
}

// CNIThroughput attaches count pods with workers concurrent ADDs and
// returns pods per second, then deletes them.
func CNIThroughput(n *rig.Node, list *libcni.NetworkConfigList, count, workers int) (float64, error) {
	start := time.Now()
	pods, err := attachPods(n, list, "tp", count, workers)
	rate := float64(count) / time.Since(start).Seconds()
	detachPods(n, list, pods)
	return rate, err
}

// CNILatencyLoaded is CNILatency on a node that already runs resident
// pods of the same chain: what ADD and DEL cost on a busy node, where
// whatever either does per pod already there shows.
func CNILatencyLoaded(n *rig.Node, list *libcni.NetworkConfigList, resident, count int) (addP50, addP99, delP50, delP99 float64, err error) {
	pods, err := attachPods(n, list, "res", resident, 8)
	defer detachPods(n, list, pods)
	if err != nil {
		return 0, 0, 0, 0, fmt.Errorf("%s: %d resident pods: %w", list.Name, resident, err)
	}
	return CNILatency(n, list, count)
}

// attachPods attaches count pods in namespaces of their own with workers
// concurrent ADDs; the pods made are returned even on an error.
func attachPods(n *rig.Node, list *libcni.NetworkConfigList, prefix string, count, workers int) ([]*rig.Pod, error) {
	cni := n.CNIClient("bench-cache")
	var pods []*rig.Pod
	for i := 0; i < count; i++ {
		p, err := n.NewPodNS(fmt.Sprintf("%s-%s-%d", prefix, list.Name, i))
		if err != nil {
			return pods, err
		}
		pods = append(pods, p)
	}
	work := make(chan *rig.Pod)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if _, err := cni.AddNetworkList(context.Background(), list, p.RuntimeConf()); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		}()
	}
	for _, p := range pods {
		work <- p
	}
	close(work)
	wg.Wait()
	return pods, firstErr
}

// detachPods deletes pods and their namespaces.
func detachPods(n *rig.Node, list *libcni.NetworkConfigList, pods []*rig.Pod) {
	cni := n.CNIClient("bench-cache")
	for _, p := range pods {
		cni.DelNetworkList(context.Background(), list, p.RuntimeConf())
		rig.Run("ip", "netns", "del", p.NS)
	}
}

// PluginStart times count VERSION calls of plugin through libcni on node n
// and returns their median in ms: what starting the plugin costs every
// ADD and DEL before it does any work.
func PluginStart(n *rig.Node, plugin string, count int) (float64, error) {
	cni := n.CNIClient("bench-cache")
	var starts []float64
	for i := 0; i < count; i++ {
		start := time.Now()
		if _, err := cni.GetVersionInfo(context.Background(), plugin); err != nil {
			return 0, fmt.Errorf("%s VERSION: %w", plugin, err)
		}
		starts = append(starts, ms(time.Since(start)))
	}
	p50, _ := pct(starts)
	return p50, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

func pct(v []float64) (p50, p99 float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2], s[len(s)*99/100]
}

// WriteRefConflist stores the reference conflist for a node and returns it loaded.
func WriteRefConflist(n *rig.Node) (*libcni.NetworkConfigList, error) {
	dir := filepath.Join(n.Dir, "host-local")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(RefConflist(dir))
}
