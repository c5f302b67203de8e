package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKubernetesNamedPorts resolves a named port on the destination pod,
// for ingress on the selected pod and for egress on each peer.
func TestKubernetesNamedPorts(t *testing.T) {
	pods := truthPods()
	for i := range pods {
		if pods[i].Name == "b" {
			pods[i].NamedPorts = map[string]NamedPort{"http": {Protocol: "TCP", Port: 8080}}
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - ports: [{port: http}]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: http}]
`), 0o644)
	objs, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := Compile(Snapshot{Policies: objs.Policies, Namespaces: truthNamespaces(), Pods: pods, NamedPortsKnown: true})
	got := c.Render()
	for _, want := range []string{
		"pod x/a 10.244.0.10 via lmxa, selected by x/named\n  ingress: isolated\n    drop\n  egress: isolated\n    allow to {10.244.1.11/32} on tcp/8080 (x/named)\n    drop\n",
		"pod x/b 10.244.0.11 via lmxb, selected by x/named\n  ingress: isolated\n    allow from any on tcp/8080 (x/named)\n    drop\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("compiled:\n%s\nwant it to contain:\n%s", got, want)
		}
	}
}
