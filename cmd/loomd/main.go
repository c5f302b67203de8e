// Command loomd is Loom's node agent.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/loomnet/loom/agent"
	"github.com/loomnet/loom/internal/usage"
	"github.com/loomnet/loom/overlay"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration.
func run(args []string) int {
	cmd := newCommand(func(cfg agent.Config) error {
		log, err := agent.NewLogger(cfg.LogLevel, cfg.LogFormat)
		if err != nil {
			return err
		}
		defer log.Sync()
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		ctx, reloading := reloadOnHangup(ctx, log, args)
		err = agent.Run(ctx, cfg, log)
		if reloading() {
			return errReload
		}
		return err
	})
	// loomd has no subcommands, so cobra would not add completion itself.
	cmd.AddCommand(&cobra.Command{
		Use:       "completion bash|zsh|fish|powershell",
		Short:     "Print a shell completion script for loomd",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		RunE: func(c *cobra.Command, args []string) error {
			switch args[0] {
			case "bash":
				return cmd.GenBashCompletionV2(os.Stdout, true)
			case "zsh":
				return cmd.GenZshCompletion(os.Stdout)
			case "fish":
				return cmd.GenFishCompletion(os.Stdout, true)
			case "powershell":
				return cmd.GenPowerShellCompletionWithDesc(os.Stdout)
			}
			return usage.Errorf("unknown shell %q (bash, zsh, fish, powershell)", args[0])
		},
	})
	var wgName, wgSocket string
	var wgMTU int
	wgDevice := &cobra.Command{
		Use:    "wireguard-device",
		Short:  "Run a userspace WireGuard device for loomd (started by loomd itself)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return overlay.RunWireGuardDevice(wgName, wgMTU, wgSocket)
		},
	}
	wgDevice.Flags().StringVar(&wgName, "name", overlay.WireGuardDevice, "device name")
	wgDevice.Flags().IntVar(&wgMTU, "mtu", 1420, "device MTU")
	wgDevice.Flags().StringVar(&wgSocket, "socket", "", "UAPI socket to serve")
	cmd.AddCommand(wgDevice)
	usage.Mark(cmd)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if errors.Is(err, agent.ErrUnderlayChanged) || errors.Is(err, errReload) {
		err = startAgain(err)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loomd:", err)
		var fe *agent.FlagError
		if errors.As(err, &fe) || usage.Is(err) {
			return 2
		}
		return 1
	}
	return 0
}

// newCommand returns loomd's root command: its flags, the configuration
// file and LOOM_* variables read into a Config, which serve then runs.
// Reload builds it a second time to check a changed configuration.
func newCommand(serve func(agent.Config) error) *cobra.Command {
	cfg := agent.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "loomd",
		Short: "Loom node agent: gossip membership, subnet leases and the VXLAN data plane",
		Long: `loomd runs on every node of a Loom fabric. It joins its peers by gossip,
claims a pod subnet, programs the kernel's VXLAN data plane and serves the
local API the loom CNI plugin uses. Every flag can also be set with a LOOM_*
environment variable (--cluster-cidr is LOOM_CLUSTER_CIDR), or as a key of
the YAML file given with --config. A flag on the command line wins over the
file, and the file over the environment. SIGHUP reloads: loomd checks the
configuration read anew and starts again in place with it, or logs why
not and runs on; SIGTERM and SIGINT stop it, leaving the data plane.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       agent.Version,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "unique name of this node in the fabric (default: hostname)")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "underlay IPv4 or IPv6 address peers use to reach this node; every node's is of one family (default: the IPv4 address of --iface, else its global IPv6 one)")
	f.StringVar(&cfg.Iface, "iface", "", "underlay interface (default: the one holding the default route)")
	f.StringSliceVar(&cfg.Join, "join", nil, "peers to join, host[:port],...; empty bootstraps a new fabric")
	f.IntVar(&cfg.GossipPort, "gossip-port", cfg.GossipPort, "gossip port (TCP and UDP), the same on every node")
	f.StringVar(&cfg.GossipProfile, "gossip-profile", cfg.GossipProfile, "failure-detection timing: lan or wan")
	f.StringVar(&cfg.ClusterCIDR, "cluster-cidr", cfg.ClusterCIDR, "pod address space of the whole fabric")
	f.IntVar(&cfg.SubnetPrefix, "subnet-prefix", cfg.SubnetPrefix, "prefix length of each node's pod subnet")
	f.IntVar(&cfg.VNI, "vni", cfg.VNI, "VXLAN network identifier")
	f.IntVar(&cfg.VXLANPort, "vxlan-port", cfg.VXLANPort, "VXLAN UDP port")
	f.StringVar(&cfg.Backend, "backend", cfg.Backend, "data plane between nodes: vxlan, or wireguard (encrypted; kernel module if present, else userspace)")
	f.IntVar(&cfg.WireGuardPort, "wireguard-port", cfg.WireGuardPort, "WireGuard UDP port, the same on every node (backend wireguard)")
	f.DurationVar(&cfg.WireGuardKeepalive, "wireguard-keepalive", 0, "keepalive to each peer, to hold NAT mappings open, e.g. 25s; 0 disables (backend wireguard)")
	f.IntVar(&cfg.MTU, "mtu", 0, "overlay and pod MTU (default: underlay MTU - 50 for vxlan over IPv4, - 70 over IPv6, - 80 for wireguard)")
	f.StringVar(&cfg.GossipKeyFile, "gossip-key-file", "", "file with base64 gossip keys, one per line, first is primary (create with 'loomctl keygen')")
	f.BoolVar(&cfg.InsecureGossip, "insecure-gossip", false, "run gossip without encryption (explicit opt-out)")
	f.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "directory for the agent's crash-safe state")
	f.StringVar(&cfg.Socket, "socket", cfg.Socket, "unix socket of the local API")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", cfg.CNIConfDir, "directory the CNI conflist is written to")
	f.StringSliceVar(&cfg.UnderlayCIDRs, "underlay-cidrs", nil, "networks peers' underlay addresses must be in; records outside are rejected (default: any)")
	f.BoolVar(&cfg.DirectRouting, "direct-routing", false, "route peers on the same L2 segment as --iface via their underlay address, without VXLAN; others still use VXLAN")
	f.StringVar(&cfg.PolicySource, "policy-source", "auto", "where NetworkPolicies come from: kubernetes (the API server, in cluster), files (--policy-dir), none, or auto (kubernetes in a cluster or with --kubeconfig, else files when --policy-dir is set, else none)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file for --policy-source kubernetes outside a pod (default: the pod's service account)")
	f.StringVar(&cfg.PolicyDir, "policy-dir", "", "directory of NetworkPolicy and Namespace YAML files, reloaded on change (policy source files)")
	f.StringVar(&cfg.PodAntiSpoof, "pod-antispoof", "nftables", "how pods are kept to their own source address: nftables (an entry per pod in one rule's sets) or rp_filter (strict reverse-path filter per veth; needs net.ipv4.conf.all.rp_filter 0 or 1)")
	f.BoolVar(&cfg.Masquerade, "masquerade", cfg.Masquerade, "give pods' traffic to destinations outside the cluster CIDR and the member nodes the node's address; --masquerade=false keeps pods' own (the underlay must route the pod network)")
	f.StringSliceVar(&cfg.AllowPodToHost, "allow-pod-to-host", nil, "what pods may reach on their own node besides ICMP: tcp/PORT or udp/PORT, comma-separated; 'all' allows everything")
	f.StringSliceVar(&cfg.CNIChain, "cni-chain", nil, "plugins chained after loom in the conflist, e.g. portmap,bandwidth")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "address for /metrics, /healthz, /readyz; empty disables")
	f.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	f.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "json or console")
	f.DurationVar(&cfg.DeadNodeGrace, "dead-node-grace", cfg.DeadNodeGrace, "how long after a peer is declared dead its routes are withdrawn (0 = at once)")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "how long a dead node's subnet stays reserved for it")
	f.DurationVar(&cfg.ResyncInterval, "resync-interval", cfg.ResyncInterval, "how often the kernel is re-read and drift repaired")

	var configFile string
	var printConfig bool
	f.StringVar(&configFile, "config", "", "YAML file whose keys are these flags' names; flags on the command line win over it, and it wins over LOOM_* variables")
	f.BoolVar(&printConfig, "print-config", false, "print the effective configuration as YAML and exit")

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if configFile == "" {
			configFile = os.Getenv("LOOM_CONFIG")
		}
		if configFile != "" {
			if err := agent.ApplyConfigFile(cmd.Flags(), configFile); err != nil {
				return err
			}
		}
		if err := applyEnv(cmd.Flags()); err != nil {
			return err
		}
		if printConfig {
			// The merged configuration is printed even when a value is
			// wrong, so the user sees where it came out; the exit status
			// then says whether loomd would take it.
			if err := agent.PrintConfig(os.Stdout, cmd.Flags()); err != nil {
				return err
			}
			return agent.Validate(cfg)
		}
		return serve(cfg)
	}
	return cmd
}

// startAgain replaces the process with a fresh loomd with the same
// arguments and environment. The supervisor (systemd, the kubelet, a
// compose restart policy, or none) sees the same process go on. It returns
// only when the exec failed; loomd then exits 1 and a supervisor restarts
// it instead.
func startAgain(why error) error {
	self, err := os.Executable()
	if err == nil {
		err = syscall.Exec(self, os.Args, os.Environ())
	}
	return fmt.Errorf("%w; starting again failed: %v", why, err)
}

// applyEnv sets every flag the user did not pass from LOOM_<FLAG>, through
// the flag's own parser, so both paths validate alike.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" || f.Name == "version" || f.Name == "config" || f.Name == "print-config" {
			return
		}
		name := "LOOM_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = &agent.FlagError{Flag: f.Name, Err: fmt.Errorf("from %s=%q: %v", name, v, serr)}
		}
	})
	return err
}
