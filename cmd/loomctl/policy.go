package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/loomnet/loom/api"
)

func podName(m api.PodMeta) string {
	if m.Name == "" {
		return m.Namespace + "/-"
	}
	return m.Namespace + "/" + m.Name
}

func formatLabels(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

func printPolicy(w io.Writer, st api.PolicyStatus) error {
	fmt.Fprintf(w, "source: %s\n", st.Source)
	if st.Source == "none" {
		fmt.Fprintln(w, "network policy is off (start loomd with --policy-dir)")
		return nil
	}
	if st.Pending != "" {
		fmt.Fprintf(w, "POLICIES NOT KNOWN YET: %s\n", st.Pending)
		if st.Error != "" {
			fmt.Fprintf(w, "last load failed: %s\n", st.Error)
		}
		return nil
	}
	fmt.Fprintf(w, "policies (%d): %s\n", len(st.Policies), strings.Join(st.Policies, ", "))
	if st.Error != "" {
		fmt.Fprintf(w, "LAST RELOAD FAILED (previous set in force): %s\n", st.Error)
	}
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	if len(st.Pods) == 0 {
		fmt.Fprintln(w, "no local pod is selected by a policy: all traffic allowed")
	}
	for _, p := range st.Pods {
		fmt.Fprintf(w, "\npod %s/%s %s (selected by %s)\n", p.Namespace, p.Name, p.IP, strings.Join(p.Policies, ", "))
		for _, d := range []struct {
			name     string
			isolated bool
			allow    []string
		}{{"ingress from", p.IngressIsolated, p.Ingress}, {"egress to", p.EgressIsolated, p.Egress}} {
			if !d.isolated {
				fmt.Fprintf(w, "  %s: anything (not isolated)\n", d.name)
				continue
			}
			if len(d.allow) == 0 {
				fmt.Fprintf(w, "  %s: nothing (deny all)\n", d.name)
				continue
			}
			fmt.Fprintf(w, "  %s:\n", d.name)
			for _, a := range d.allow {
				fmt.Fprintf(w, "    %s\n", a)
			}
		}
	}
	return nil
}
