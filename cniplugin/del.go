package cniplugin

import (
	"context"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/loomnet/loom/api"
)

// cmdDel is idempotent: a missing netns, interface or allocation is
// success, so runtimes can retry DEL as often as they like.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := validateArgs(args, false); err != nil {
		return err
	}
	// The agent deletes the veth pair by its host end, in the background
	// after cutting the pod off: the pod end goes with it, so DEL never
	// enters the netns (which may be gone) nor waits for the kernel.
	client := api.NewClient(conf.Socket, apiTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := client.Release(ctx, api.PodRef{ContainerID: args.ContainerID, IfName: args.IfName}); err != nil {
		return agentError("release address", client, err)
	}
	return nil
}
