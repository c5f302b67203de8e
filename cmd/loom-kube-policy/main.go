// Command loom-kube-policy follows a cluster's NetworkPolicy, Pod and
// Namespace objects for loomd (--policy-source kubernetes) and writes them
// to standard output as a stream of JSON views. loomd starts it, reads
// the stream and restarts it if it ends; it is a program of its own so
// that client-go's memory stays out of every loomd.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/loomnet/loom/internal/logging"
	"github.com/loomnet/loom/internal/usage"
	"github.com/loomnet/loom/policy/kubesource"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Version is set at build time.
var Version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

// exit codes: 0 stopped (signal, or loomd closed standard input),
// 1 runtime failure, 2 bad flags.
func run(args []string) int {
	var syncTimeout, interval time.Duration
	var logLevel, logFormat, kubeconfig string
	cmd := &cobra.Command{
		Use:   "loom-kube-policy",
		Short: "Stream a cluster's network policies, pods and namespaces to loomd",
		Long: `loom-kube-policy is started by loomd --policy-source kubernetes. It
connects to the API server (as the pod's service account, or as
--kubeconfig says), waits until it has listed every NetworkPolicy, Pod and Namespace,
and writes one JSON view of them per line to standard output, then a new
view after every change that policies read. It ends when its standard input
closes, which is when loomd has gone.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
		RunE: func(*cobra.Command, []string) error {
			if syncTimeout <= 0 {
				return usage.Errorf("invalid --sync-timeout: %v: must be positive", syncTimeout)
			}
			if interval <= 0 {
				return usage.Errorf("invalid --interval: %v: must be positive", interval)
			}
			level, err := logging.ParseLevel(logLevel)
			if err != nil {
				return usage.Errorf("invalid --log-level: %v", err)
			}
			if err := logging.CheckFormat(logFormat); err != nil {
				return usage.Errorf("invalid --log-format: %v", err)
			}
			log, err := logging.New(level, logFormat)
			if err != nil {
				return err
			}
			defer log.Sync()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			go func() {
				// loomd holds the other end; EOF means it has gone.
				io.Copy(io.Discard, os.Stdin)
				stop()
			}()
			return follow(ctx, log, kubeconfig, syncTimeout, interval)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&syncTimeout, "sync-timeout", time.Minute, "how long the first full listing may take")
	f.DurationVar(&interval, "interval", 100*time.Millisecond, "changes within this time of each other make one view")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file to reach the API server with (default: the pod's service account, in cluster)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "json", "json or console")
	usage.Mark(cmd)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		// loomd reports this last line of standard error as the reason.
		fmt.Fprintln(os.Stderr, "loom-kube-policy:", err)
		if usage.Is(err) {
			return 2
		}
		return 1
	}
	return 0
}

// restConfig is the pod's service account, or the kubeconfig file if one
// is given.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w (outside a cluster give loomd --kubeconfig, or use --policy-source files or none)", err)
	}
	return cfg, nil
}

// follow connects to the API server (in cluster, or as kubeconfig says)
// and streams views to standard output until ctx ends.
func follow(ctx context.Context, log *zap.Logger, kubeconfig string, syncTimeout, interval time.Duration) error {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "loom-kube-policy/" + Version
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes: %w", err)
	}
	src, err := kubesource.New(cs)
	if err != nil {
		return err
	}
	defer src.Stop()
	syncCtx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	nodesErr, err := src.Start(syncCtx)
	if err != nil {
		return fmt.Errorf("kubernetes: %w", err)
	}
	if nodesErr != nil {
		// Policies work without; deleted nodes' subnets then stay
		// reserved for --lease-ttl.
		log.Warn("not following nodes (RBAC list/watch on nodes missing?); a deleted node's subnet is freed only after --lease-ttl", zap.Error(nodesErr))
	}
	log.Info("following network policies, pods and namespaces", zap.String("api", cfg.Host), zap.Bool("nodes", nodesErr == nil))
	return src.Stream(ctx, os.Stdout, interval)
}
