// Command loomctl is the operator's CLI for a node's loomd.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/internal/atomicfile"
	"github.com/loomnet/loom/internal/usage"
	"github.com/spf13/cobra"
)

// Version is set at build time.
var Version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// printStatus prints the node's status and its peers as tables.
func printStatus(stdout io.Writer, st api.Status) error {
	n := st.Node
	ready := "yes"
	if !n.Ready {
		ready = "no: " + strings.Join(n.NotReady, "; ")
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Node:\t%s\nVersion:\t%s\nUnderlay:\t%s\nSubnet:\t%s\nVTEP MAC:\t%s\nBackend:\t%s\nMTU:\t%d (overlay and pods)\nReady:\t%s\n",
		n.Name, n.Version, n.Underlay, n.Subnet, n.VTEPMAC, n.Backend, n.MTU, ready)
	if n.ReconcileError != "" {
		fmt.Fprintf(tw, "Reconcile:\tfailing, retried (the data plane stays as it is): %s\n", n.ReconcileError)
	}
	fmt.Fprintf(tw, "Pods:\t%d/%d addresses used\nConflicts:\t%d subnets lost to older leases\nGossip:\t%s\n",
		n.PodsUsed, n.PodsTotal, n.Conflicts, map[bool]string{true: "encrypted", false: "NOT encrypted"}[n.GossipEncrypted])
	states := map[string]int{}
	for _, p := range st.Peers {
		states[p.State]++
	}
	fmt.Fprintf(tw, "Peers:\t%d alive, %d suspect, %d dead, %d left\n", states["alive"], states["suspect"], states["dead"], states["left"])
	tw.Flush()
	fmt.Fprintln(stdout)
	return printPeers(stdout, st.Peers)
}

func printPeers(w io.Writer, peers []api.PeerStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tUNDERLAY\tSUBNET\tVTEP MAC\tMTU\tSTATE\tSINCE\tPROGRAMMED\tWHY NOT")
	for _, p := range peers {
		why := "-"
		if !p.Programmed && p.Reason != "" {
			why = p.Reason
		}
		mtu := "-" // an agent too old to say
		if p.MTU > 0 {
			mtu = fmt.Sprint(p.MTU)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", p.Name, p.Underlay, p.Subnet, p.VTEPMAC, mtu, p.State, p.Since.Format(time.RFC3339), p.Programmed, why)
	}
	return tw.Flush()
}

// installFile copies src into dir under the same name through a temporary
// file and a rename, so a runtime never executes a half-written plugin. A
// source that is not a plugin at all (missing, a directory, empty as a
// cut-short download leaves it) is refused before the installed plugin is
// touched: replacing it would fail every pod start on the node.
func installFile(src, dir string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("--from: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", fmt.Errorf("--from: %w", err)
	}
	switch {
	case !st.Mode().IsRegular():
		return "", fmt.Errorf("--from %s: not a regular file", src)
	case st.Size() == 0:
		return "", fmt.Errorf("--from %s: the file is empty", src)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("--to: %w", err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := atomicfile.Write(dst, in, 0o755); err != nil {
		return "", fmt.Errorf("install %s: %w", src, err)
	}
	return dst, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	socket := api.DefaultSocket
	if s := os.Getenv("LOOM_SOCKET"); s != "" {
		socket = s
	}
	var output string
	root := &cobra.Command{
		Use:           "loomctl",
		Short:         "Inspect and operate a Loom node through its agent's local API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&socket, "socket", socket, "loomd's unix socket (env LOOM_SOCKET)")
	root.PersistentFlags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	client := func() *api.Client { return api.NewClient(socket, 10*time.Second) }
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if output != "table" && output != "json" {
			return usage.Errorf("invalid --output %q: want table or json", output)
		}
		return nil
	}
	printJSON := func(v any) error {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	// show prints v as JSON with -o json, else through table.
	show := func(v any, table func() error) error {
		if output == "json" {
			return printJSON(v)
		}
		return table()
	}

	root.AddCommand(&cobra.Command{
		Use:   "keygen",
		Short: "Print a new random gossip key (base64, 32 bytes) for --gossip-key-file",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			k := make([]byte, 32)
			if _, err := rand.Read(k); err != nil {
				return err
			}
			fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(k))
			return nil
		},
	})
	keyring := &cobra.Command{
		Use:   "keyring",
		Short: "Rotate the gossip keys of the whole fabric: list, install KEY, use KEY, remove KEY",
	}
	keyringOp := func(op string, nargs int) *cobra.Command {
		return &cobra.Command{
			Use: op + map[int]string{0: "", 1: " KEY"}[nargs],
			Short: map[string]string{
				"list":    "Show every node's keys (fingerprints, primary first)",
				"install": "Add KEY to every node's keyring (accepted, not yet used to send)",
				"use":     "Make KEY, installed everywhere, the one every node encrypts with",
				"remove":  "Remove KEY, which must not be any node's primary, from every node",
			}[op],
			Args: cobra.ExactArgs(nargs),
			RunE: func(_ *cobra.Command, args []string) error {
				req := api.KeyringRequest{Op: op}
				if nargs == 1 {
					req.Key = args[0]
				}
				res, err := client().Keyring(context.Background(), req)
				if err != nil {
					return err
				}
				failed := 0
				for _, r := range res.Results {
					if r.Error != "" {
						failed++
					}
				}
				err = show(res, func() error {
					tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "NODE\tRESULT\tKEYS (PRIMARY FIRST)")
					for _, r := range res.Results {
						status := "ok"
						if r.Error != "" {
							status = "error: " + r.Error
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Node, status, strings.Join(r.Keys, " "))
					}
					return tw.Flush()
				})
				if err != nil {
					return err
				}
				if failed > 0 {
					return fmt.Errorf("keyring %s failed on %d of %d nodes", op, failed, len(res.Results))
				}
				return nil
			},
		}
	}
	keyring.AddCommand(keyringOp("list", 0), keyringOp("install", 1), keyringOp("use", 1), keyringOp("remove", 1))
	root.AddCommand(keyring)
	installCNI := &cobra.Command{
		Use:   "install-cni",
		Short: "Copy the loom plugin into the CNI binary directory, atomically (for init containers)",
		Args:  cobra.NoArgs,
	}
	from := installCNI.Flags().String("from", "/usr/local/bin/loom", "the plugin binary to install")
	to := installCNI.Flags().String("to", "/opt/cni/bin", "the CNI binary directory")
	installCNI.RunE = func(*cobra.Command, []string) error {
		dst, err := installFile(*from, *to)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "installed", dst)
		return nil
	}
	root.AddCommand(installCNI)
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print loomctl's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(stdout, "loomctl", Version)
			return nil
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show this node and its peers",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			st, err := client().Status(context.Background())
			if err != nil {
				return err
			}
			return show(st, func() error { return printStatus(stdout, st) })
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "peers",
		Short: "List every known node: underlay, subnet, VTEP MAC, state, last change, programmed here",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			st, err := client().Status(context.Background())
			if err != nil {
				return err
			}
			return show(st.Peers, func() error { return printPeers(stdout, st.Peers) })
		},
	})
	pods := &cobra.Command{
		Use:   "pods",
		Short: "List this node's pod address allocations",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			pods, err := client().Pods(context.Background())
			if err != nil {
				return err
			}
			return show(pods, func() error {
				tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "CONTAINER\tINTERFACE\tIP\tHOST IF\tPOD\tLABELS\tSINCE")
				for _, p := range pods {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ContainerID, p.IfName, p.IP, p.HostIf,
						podName(p.PodMeta), formatLabels(p.Labels), p.Created.Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	var labelIf string
	label := &cobra.Command{
		Use:   "label CONTAINER KEY=VALUE... | KEY-...",
		Short: "Set (KEY=VALUE) or remove (KEY-) labels of a pod; network policies follow at once",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			req := api.LabelRequest{PodRef: api.PodRef{ContainerID: args[0], IfName: labelIf}, Set: map[string]string{}}
			for _, kv := range args[1:] {
				if k, ok := strings.CutSuffix(kv, "-"); ok && !strings.Contains(kv, "=") {
					req.Remove = append(req.Remove, k)
					continue
				}
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usage.Errorf("%q: want KEY=VALUE to set or KEY- to remove", kv)
				}
				req.Set[k] = v
			}
			al, err := client().Label(context.Background(), req)
			if err != nil {
				return err
			}
			return show(al, func() error {
				_, err := fmt.Fprintf(stdout, "%s %s: %s\n", podName(al.PodMeta), al.IP, formatLabels(al.Labels))
				return err
			})
		},
	}
	label.Flags().StringVar(&labelIf, "ifname", "eth0", "the pod's interface (CNI_IFNAME)")
	pods.AddCommand(label)
	root.AddCommand(pods)
	wg := &cobra.Command{Use: "wg", Short: "WireGuard backend operations"}
	wg.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Switch this node to a new WireGuard key pair; peers pick up the new public key by gossip",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			res, err := client().RotateWireGuardKey(context.Background())
			if err != nil {
				return err
			}
			return show(res, func() error {
				_, err := fmt.Fprintf(stdout, "new WireGuard public key: %s\n", res.PublicKey)
				return err
			})
		},
	})
	root.AddCommand(wg)
	root.AddCommand(&cobra.Command{
		Use:   "policy",
		Short: "Show the network policies in force and, per local pod, what they allow",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			st, err := client().Policy(context.Background())
			if err != nil {
				return err
			}
			return show(st, func() error { return printPolicy(stdout, st) })
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "subnets",
		Short: "Show the lease table: which node holds which subnet",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			leases, err := client().Subnets(context.Background())
			if err != nil {
				return err
			}
			return show(leases, func() error {
				tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "SUBNET\tOWNER\tSTATE\tHOLDER\tEPOCH\tEXPIRES")
				for _, l := range leases {
					exp := "-"
					if !l.Expires.IsZero() {
						exp = l.Expires.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%s\n", l.Subnet, l.Owner, l.State, l.Holder, l.Epoch, exp)
				}
				return tw.Flush()
			})
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "rmpeer NAME",
		Short: "Release a dead node's subnet now, cluster-wide (refused for a live node)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			res, err := client().RemovePeer(context.Background(), args[0])
			if err != nil {
				return err
			}
			return show(res, func() error {
				_, err := fmt.Fprintf(stdout, "removed %s; released %s\n", args[0], strings.Join(res.Released, ", "))
				return err
			})
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "leave",
		Short: "Make this node leave the fabric: release its lease, remove its conflist and data plane, stop loomd",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := client().Leave(context.Background()); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "left the fabric; loomd has stopped")
			return nil
		},
	})
	usage.Mark(root)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "loomctl:", err)
		if usage.Is(err) {
			return 2
		}
		return 1
	}
	return 0
}
