// Command podctl plays container runtime inside a compose node: it makes
// pods (named network namespaces), attaches them through libcni with the
// conflist loomd wrote, and pings from them. The compose rig bakes it into
// its image; it is a demo and test helper, not part of a production node.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/internal/icmpecho"
	"github.com/vishvananda/netns"
)

const (
	conflist = "/etc/cni/net.d/10-loom.conflist"
	cniPath  = "/usr/local/bin"
	cacheDir = "/var/lib/cni"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "podctl:", err)
		os.Exit(1)
	}
}

func usage() error {
	return errors.New("usage: podctl wait-ready PEERS TIMEOUT | add POD | del POD | ping-all POD IP [IP ...]")
}

func run(args []string) error {
	if len(args) < 1 {
		return usage()
	}
	switch args[0] {
	case "wait-ready":
		if len(args) != 3 {
			return usage()
		}
		peers, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		timeout, err := time.ParseDuration(args[2])
		if err != nil {
			return err
		}
		return waitReady(peers, timeout)
	case "add":
		if len(args) != 2 {
			return usage()
		}
		ip, err := add(args[1])
		if err != nil {
			return err
		}
		fmt.Println(ip)
		return nil
	case "del":
		if len(args) != 2 {
			return usage()
		}
		return del(args[1])
	case "ping-all":
		if len(args) < 3 {
			return usage()
		}
		return pingAll(args[1], args[2:])
	}
	return usage()
}

// waitReady waits until loomd is ready, has written its conflist and has
// programmed the given number of peers.
func waitReady(peers int, timeout time.Duration) error {
	c := api.NewClient(api.DefaultSocket, 3*time.Second)
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		last = func() error {
			st, err := c.Status(context.Background())
			if err != nil {
				return err
			}
			if !st.Node.Ready {
				return fmt.Errorf("not ready: %s", strings.Join(st.Node.NotReady, "; "))
			}
			n := 0
			for _, p := range st.Peers {
				if p.Programmed {
					n++
				}
			}
			if n < peers {
				return fmt.Errorf("%d of %d peers programmed", n, peers)
			}
			_, err = os.Stat(conflist)
			return err
		}()
		if last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s: %w", timeout, last)
}

func runtimeConf(pod string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: "compose-" + pod, NetNS: filepath.Join("/run/netns", pod), IfName: "eth0"}
}

func cni() (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	list, err := libcni.ConfListFromFile(conflist)
	if err != nil {
		return nil, nil, err
	}
	return libcni.NewCNIConfigWithCacheDir([]string{cniPath}, cacheDir, nil), list, nil
}

// add creates the pod's namespace and attaches it; it prints the pod IP.
func add(pod string) (string, error) {
	if err := newNamedNetns(pod); err != nil {
		return "", err
	}
	c, list, err := cni()
	if err != nil {
		return "", err
	}
	res, err := c.AddNetworkList(context.Background(), list, runtimeConf(pod))
	if err != nil {
		return "", err
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return "", err
	}
	if len(cur.IPs) != 1 {
		return "", fmt.Errorf("result has %d addresses", len(cur.IPs))
	}
	return cur.IPs[0].Address.IP.String(), nil
}

// newNamedNetns creates /run/netns/NAME without changing this process's
// own namespace for longer than it takes.
func newNamedNetns(name string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	h.Close()
	return netns.Set(orig)
}

func del(pod string) error {
	c, list, err := cni()
	if err != nil {
		return err
	}
	if err := c.DelNetworkList(context.Background(), list, runtimeConf(pod)); err != nil {
		return err
	}
	return netns.DeleteNamed(pod)
}

// pingAll sends ICMP echoes from inside the pod to each address (up to 3
// tries of 1 s) and prints "ok IP" or "fail IP reason" per line.
func pingAll(pod string, addrs []string) error {
	p, err := icmpecho.Open(filepath.Join("/run/netns", pod))
	if err != nil {
		return err
	}
	defer p.Close()
	failed := 0
	for _, a := range addrs {
		err := ping(p, a)
		if err != nil {
			failed++
			fmt.Printf("fail %s %v\n", a, err)
			continue
		}
		fmt.Printf("ok %s\n", a)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d unreachable from %s", failed, len(addrs), pod)
	}
	return nil
}

func ping(p *icmpecho.Pinger, addr string) error {
	dst, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("%q is not an address", addr)
	}
	for attempt := 1; ; attempt++ {
		err := p.Ping(dst, time.Second)
		if err == nil || attempt == 3 {
			return err
		}
	}
}
