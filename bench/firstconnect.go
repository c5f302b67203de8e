package bench

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/integration/rig"
)

// AdmitsWebPolicy is a policy file: pods labelled app=db admit pods
// labelled app=web, and no others.
const AdmitsWebPolicy = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: default}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
`

// FirstConnectResult is how soon new pods were admitted by a policy on
// another node.
type FirstConnectResult struct {
	Pods int
	// Resent counts the connects that took more than resendAfter: their
	// first SYN was dropped (the pod not yet admitted) and sent again.
	Resent int
	// Median is the median connect time.
	Median time.Duration
}

// resendAfter tells a connect that waited for TCP's first SYN resend (1 s)
// from one that did not.
const resendAfter = 500 * time.Millisecond

// FirstConnects attaches pods labelled app=web back to back, in turn on
// the nodes of web, named prefix-N, and has each connect once to addr (a
// TCP listener in a pod labelled app=db on another node, whose policy
// admits app=web) the moment its ADD returns, as a pod's process that
// starts at once would.
func FirstConnects(web []*rig.Node, prefix string, pods int, addr string) (FirstConnectResult, error) {
	var mu sync.Mutex
	var took []time.Duration
	var wg sync.WaitGroup
	var addErr error
	for i := range pods {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		name := fmt.Sprintf("%s-%d", prefix, i)
		p, err := web[i%len(web)].AddPodWithArgs(ctx, name, [][2]string{{"K8S_POD_NAME", name}, {"LOOM_POD_LABELS", "app:web"}})
		cancel()
		if err != nil {
			addErr = err
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := ns.WithNetNSPath("/run/netns/"+p.NS, func(ns.NetNS) error {
				c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			d := time.Since(start)
			if err != nil {
				d = 5 * time.Second
			}
			mu.Lock()
			took = append(took, d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if addErr != nil {
		return FirstConnectResult{}, addErr
	}
	slices.Sort(took)
	res := FirstConnectResult{Pods: len(took), Median: took[len(took)/2]}
	for _, d := range took {
		if d > resendAfter {
			res.Resent++
		}
	}
	return res, nil
}
