package rig

import (
	"context"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
)

// pluginExec runs CNI plugins inside a node's network namespace, where a
// runtime on that node would run them. A child process starts in the
// namespace of the thread that forks it, so the plugin is started from a
// thread locked into the node's namespace: no wrapper process (sh,
// nsenter) stands between libcni and the plugin to cost time the plugin
// would be blamed for. Plugins a plugin delegates to (IPAM) inherit it.
type pluginExec struct {
	*invoke.RawExec
	version.PluginDecoder
	netns string
}

// ExecPlugin runs the plugin in the node's namespace.
func (e *pluginExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	var out []byte
	err := ns.WithNetNSPath(e.netns, func(ns.NetNS) error {
		var err error
		out, err = e.RawExec.ExecPlugin(ctx, pluginPath, stdinData, environ)
		return err
	})
	return out, err
}

// CNIClient is a libcni client that finds plugins in the node's CNI path,
// runs them in its namespace and caches results under cacheDir (relative
// to the node's directory).
func (n *Node) CNIClient(cacheDir string) *libcni.CNIConfig {
	exec := &pluginExec{RawExec: &invoke.RawExec{}, netns: "/run/netns/" + n.NS}
	return libcni.NewCNIConfigWithCacheDir([]string{n.CNIBin}, filepath.Join(n.Dir, cacheDir), exec)
}
