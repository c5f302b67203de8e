// Package kubernetes holds Loom's Kubernetes manifests; its test decodes
// them strictly with the Kubernetes API types so a typo fails the build.
package kubernetes

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

func documents(t *testing.T) map[string][]byte {
	t.Helper()
	files, _ := filepath.Glob("*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			out[meta.Kind] = doc
		}
	}
	return out
}

func TestManifestsDecodeStrictly(t *testing.T) {
	typed := map[string]any{
		"Namespace": &corev1.Namespace{}, "ServiceAccount": &corev1.ServiceAccount{}, "Secret": &corev1.Secret{},
		"ConfigMap": &corev1.ConfigMap{}, "Service": &corev1.Service{}, "DaemonSet": &appsv1.DaemonSet{},
		"ClusterRole": &rbacv1.ClusterRole{}, "ClusterRoleBinding": &rbacv1.ClusterRoleBinding{},
	}
	docs := documents(t)
	for kind, doc := range docs {
		obj, ok := typed[kind]
		if !ok {
			t.Errorf("manifest has kind %s that this test does not check", kind)
			continue
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Errorf("%s does not decode strictly: %v", kind, err)
		}
	}
	for kind := range typed {
		if _, ok := docs[kind]; !ok {
			t.Errorf("no %s in the manifests", kind)
		}
	}
}

func TestDaemonSetRunsLoomdAsDesigned(t *testing.T) {
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(documents(t)["DaemonSet"], &ds); err != nil {
		t.Fatal(err)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("loomd must run in the host network namespace")
	}
	if len(spec.Tolerations) == 0 || spec.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Error("loomd must tolerate every taint, to run on every node")
	}
	if len(spec.InitContainers) != 1 || !strings.Contains(strings.Join(spec.InitContainers[0].Command, " "), "install-cni") {
		t.Error("an init container must install the loom plugin")
	}
	c := spec.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Error("loomd needs privileges to program the kernel")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("probes must use /healthz and /readyz")
	}
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
	}
	for _, want := range []string{"LOOM_NODE_NAME", "LOOM_CONFIG", "LOOM_GOSSIP_KEY_FILE"} {
		if !env[want] {
			t.Errorf("env %s not set", want)
		}
	}
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = true
	}
	for _, want := range []string{"/etc/cni/net.d", "/opt/cni/bin", "/run/loom", "/var/lib/loom", "/run/netns"} {
		if !mounts[want] {
			t.Errorf("host path %s not mounted", want)
		}
	}
}
