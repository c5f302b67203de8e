package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/api"
	"github.com/vishvananda/netlink"
)

func openNetns(path string) (ns.NetNS, error) {
	netns, err := ns.GetNS(path)
	if err != nil {
		var nsErr ns.NSPathNotExistErr
		if errors.As(err, &nsErr) {
			return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("netns %q does not exist", path), err.Error())
		}
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open netns %q", path), err.Error())
	}
	return netns, nil
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	meta, err := validateArgs(args, true)
	if err != nil {
		return err
	}
	netns, err := openNetns(args.Netns)
	if err != nil {
		return err
	}
	defer netns.Close()

	client := api.NewClient(conf.Socket, apiTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 2*apiTimeout)
	defer cancel()
	ref := api.PodRef{ContainerID: args.ContainerID, IfName: args.IfName}
	type answer struct {
		alloc api.Allocation
		err   error
	}
	answered := make(chan answer, 1)
	go func() {
		a, err := client.Allocate(ctx, api.AllocateRequest{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns, PodMeta: meta})
		answered <- answer{a, err}
	}()
	// Make the veth pair while the agent stores the allocation: the fsync
	// there and the pair here take about as long. This fails where a
	// retried ADD's pair exists, or an old pair of the name is still being
	// destroyed (the agent waits that out before it answers); the pair is
	// then found, or made, once the answer is in.
	var hostIf, podIf net.Interface
	early := api.HostVethName(args.ContainerID, args.IfName)
	createdVeth := false
	if conf.MTU > 0 {
		if err := netns.Do(func(hostNS ns.NetNS) error {
			var err error
			hostIf, podIf, err = ip.SetupVethWithName(args.IfName, early, conf.MTU, "", hostNS)
			return err
		}); err == nil {
			createdVeth = true
		}
	}
	ans := <-answered
	alloc := ans.alloc
	if createdVeth && (ans.err != nil || alloc.HostIf != early || alloc.MTU != conf.MTU) {
		// Not what the agent wants (or no allocation at all): gone again.
		deletePodVeth(netns, args.IfName)
		createdVeth = false
	}
	if ans.err != nil {
		return agentError("allocate address", client, ans.err)
	}
	// One rollback for every failure below: nothing half-attached stays
	// behind. It undoes only what this ADD made, so a failed retry never
	// tears down an attachment that was working.
	defer func() {
		if err == nil {
			return
		}
		if createdVeth {
			deletePodVeth(netns, args.IfName)
		}
		if !alloc.Existing {
			_ = client.Release(context.Background(), ref)
		}
	}()

	podIP, err := netlink.ParseIPNet(alloc.IP)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("agent returned invalid address %q", alloc.IP), err.Error())
	}
	gw := net.ParseIP(alloc.Gateway)
	if gw == nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("agent returned invalid gateway %q", alloc.Gateway), "")
	}
	// With the host end in place the agent can route to it and guard it
	// while the pod end is configured: the two take about as long. Without
	// it (made below), the agent would find no veth, so it waits.
	attached := make(chan error, 1)
	attachEarly := createdVeth
	if attachEarly {
		go func() { attached <- client.Attach(ctx, ref) }()
	}
	err = netns.Do(func(hostNS ns.NetNS) error {
		if !createdVeth && alloc.Existing {
			// A retried ADD: if the pod side is already what we would make,
			// report it instead of failing on "already exists".
			if pod, host, ok := existingAttachment(args.IfName, alloc.HostIf, podIP, hostNS); ok {
				podIf, hostIf = pod, host
				return nil
			}
		}
		if !createdVeth {
			var err error
			hostIf, podIf, err = ip.SetupVethWithName(args.IfName, alloc.HostIf, alloc.MTU, "", hostNS)
			if err != nil {
				return fmt.Errorf("create veth %s/%s: %w", args.IfName, alloc.HostIf, err)
			}
			createdVeth = true
		}
		return configurePod(args.IfName, podIP, gw)
	})
	var attachErr error
	if attachEarly {
		// Wait even if configuring failed: the rollback's release must
		// not race an attach still in flight.
		attachErr = <-attached
	}
	if err != nil {
		return types.NewError(types.ErrInternal, "set up pod interface", err.Error())
	}
	if !attachEarly {
		attachErr = client.Attach(ctx, ref)
	}
	if err = attachErr; err != nil {
		return agentError("attach pod", client, err)
	}

	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostIf.Name, Mac: hostIf.HardwareAddr.String()},
			{Name: podIf.Name, Mac: podIf.HardwareAddr.String(), Sandbox: args.Netns},
		},
		IPs:    []*current.IPConfig{{Interface: current.Int(1), Address: *podIP, Gateway: gw}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, GW: gw}},
	}
	return types.PrintResult(result, conf.CNIVersion)
}

// deletePodVeth deletes the pod end of a veth pair this ADD made (the host
// end goes with it).
func deletePodVeth(netns ns.NetNS, ifName string) {
	_ = netns.Do(func(ns.NetNS) error {
		if l, err := netlinksafe.LinkByName(ifName); err == nil {
			_ = netlink.LinkDel(l)
		}
		return nil
	})
}

// existingAttachment finds a pod interface that already carries podIP and
// whose host end is hostIf, as left by an earlier ADD of this attachment.
func existingAttachment(ifName, hostIfName string, podIP *net.IPNet, hostNS ns.NetNS) (pod, host net.Interface, ok bool) {
	l, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return pod, host, false
	}
	if _, isVeth := l.(*netlink.Veth); !isVeth {
		return pod, host, false
	}
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return pod, host, false
	}
	for _, a := range addrs {
		if a.IPNet.String() == podIP.String() {
			ok = true
		}
	}
	if !ok {
		return pod, host, false
	}
	err = hostNS.Do(func(ns.NetNS) error {
		hl, err := netlinksafe.LinkByName(hostIfName)
		if err != nil {
			return err
		}
		host = net.Interface{Index: hl.Attrs().Index, Name: hl.Attrs().Name, HardwareAddr: hl.Attrs().HardwareAddr, MTU: hl.Attrs().MTU}
		return nil
	})
	if err != nil {
		return pod, host, false
	}
	pod = net.Interface{Index: l.Attrs().Index, Name: l.Attrs().Name, HardwareAddr: l.Attrs().HardwareAddr, MTU: l.Attrs().MTU}
	return pod, host, true
}

// configurePod runs inside the pod's netns: the address as a /32, a
// scope-link route to the gateway and the default route through it, so
// every packet leaves through the host, which routes it.
func configurePod(ifName string, podIP *net.IPNet, gw net.IP) error {
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("look up %s: %w", ifName, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", ifName, err)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: podIP}); err != nil {
		return fmt.Errorf("add %s to %s: %w", podIP, ifName, err)
	}
	gwNet := &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: gwNet, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("add route to gateway %s: %w", gw, err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
		return fmt.Errorf("add default route via %s: %w", gw, err)
	}
	// Runtimes normally bring up lo with the loopback plugin; doing it here
	// too keeps hand-made pods (compose rigs, scripts) working.
	if lo, err := netlinksafe.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
		_ = netlink.LinkSetUp(lo)
	}
	return nil
}
