package integration

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/integration/rig"
)

// TestCNIChaining runs loom with the real portmap and bandwidth reference
// plugins chained after it (--cni-chain): a hostPort reaches the pod from
// another node, and the bandwidth limit shows on the host veth.
func TestCNIChaining(t *testing.T) {
	ref := referencePlugins(t)
	r := newRig(t, "--cni-chain", "portmap,bandwidth")
	nodes := startNodes(t, r, 2)
	n := nodes[0]
	for _, p := range []string{"portmap", "bandwidth"} {
		if err := n.InstallPlugin(p, ref+"/"+p); err != nil {
			t.Fatal(err)
		}
	}
	cni, list, err := n.CNI()
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Plugins) != 3 || list.Plugins[1].Network.Type != "portmap" || list.Plugins[2].Network.Type != "bandwidth" {
		t.Fatalf("conflist does not chain portmap and bandwidth: %s", list.Bytes)
	}
	pod, err := n.NewPodNS("web")
	if err != nil {
		t.Fatal(err)
	}
	rt := pod.RuntimeConf()
	rt.CapabilityArgs = map[string]interface{}{
		"portMappings": []map[string]interface{}{{"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"}},
		"bandwidth":    map[string]interface{}{"ingressRate": 8000000, "ingressBurst": 80000, "egressRate": 8000000, "egressBurst": 80000},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cni.AddNetworkList(ctx, list, rt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cni.DelNetworkList(context.Background(), list, rt) })

	l := listenIn(t, pod.NS, "0.0.0.0:8080")
	hostPort := net.JoinHostPort(n.Addr.String(), "30080")
	if err := rig.Eventually(10*time.Second, func() error {
		got := make(chan error, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				c.Close()
			}
			got <- err
		}()
		if err := dialFrom(nodes[1].NS, hostPort); err != nil {
			l.(*net.TCPListener).SetDeadline(time.Now())
			<-got
			l.(*net.TCPListener).SetDeadline(time.Time{})
			return err
		}
		return <-got
	}); err != nil {
		t.Fatalf("hostPort %s did not reach the pod from node2: %v", hostPort, err)
	}

	alloc, err := n.Client().Get(ctx, api.PodRef{ContainerID: rt.ContainerID, IfName: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	qdisc := mustExec(t, n, "tc", "qdisc", "show", "dev", alloc.HostIf)
	if !strings.Contains(qdisc, "tbf") {
		t.Fatalf("no bandwidth limit (tbf qdisc) on host veth %s:\n%s", alloc.HostIf, qdisc)
	}
	if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("CHECK through the chain: %v", err)
	}
	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL through the chain: %v", err)
	}
}
