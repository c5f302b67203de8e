package cniplugin

import (
	"context"
	"runtime"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/loomnet/loom/api"
)

// Version is the plugin's version, set at build time.
var Version = "dev"

func init() {
	// Namespace switches apply to one OS thread; the main goroutine must
	// stay on the thread it started on (see plugins/pkg/ns).
	runtime.LockOSThread()
}

// cmdStatus reports whether the agent can serve ADDs (CNI 1.1 STATUS).
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	client := api.NewClient(conf.Socket, apiTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	st, err := client.Status(ctx)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "loom agent not reachable at "+conf.Socket, err.Error())
	}
	if !st.Node.Ready {
		return types.NewError(types.ErrPluginNotAvailable, "loom agent not ready: "+strings.Join(st.Node.NotReady, "; "), "")
	}
	return nil
}

// cmdGC releases every allocation and host-side leftover the runtime no
// longer lists in cni.dev/valid-attachments (CNI 1.1 GC).
func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := make([]api.PodRef, 0, len(conf.ValidAttachments))
	for _, v := range conf.ValidAttachments {
		valid = append(valid, api.PodRef{ContainerID: v.ContainerID, IfName: v.IfName})
	}
	client := api.NewClient(conf.Socket, apiTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 2*apiTimeout)
	defer cancel()
	if _, err := client.GC(ctx, valid); err != nil {
		return agentError("garbage-collect attachments", client, err)
	}
	return nil
}

// Main runs the plugin; cmd/loom calls it.
func Main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		Status: cmdStatus,
		GC:     cmdGC,
	}, version.All, "loom CNI plugin "+Version)
}
