package policy

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Validate checks a NetworkPolicy the way the API server would for the
// fields Loom enforces, and names the first field that is wrong.
func Validate(p *networkingv1.NetworkPolicy) error {
	if errs := validation.IsDNS1123Subdomain(p.Name); len(errs) > 0 {
		return fmt.Errorf("metadata.name %q: %s", p.Name, errs[0])
	}
	if errs := validation.IsDNS1123Label(p.Namespace); len(errs) > 0 {
		return fmt.Errorf("metadata.namespace %q: %s", p.Namespace, errs[0])
	}
	if err := validSelector("spec.podSelector", &p.Spec.PodSelector); err != nil {
		return err
	}
	for i, t := range p.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			return fmt.Errorf("spec.policyTypes[%d]: %q is not Ingress or Egress", i, t)
		}
	}
	for i, r := range p.Spec.Ingress {
		if err := validRule(fmt.Sprintf("spec.ingress[%d]", i), "from", r.From, r.Ports); err != nil {
			return err
		}
	}
	for i, r := range p.Spec.Egress {
		if err := validRule(fmt.Sprintf("spec.egress[%d]", i), "to", r.To, r.Ports); err != nil {
			return err
		}
	}
	return nil
}

func validSelector(field string, s *metav1.LabelSelector) error {
	if _, err := metav1.LabelSelectorAsSelector(s); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

func validRule(field, peersName string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) error {
	for i, p := range peers {
		f := fmt.Sprintf("%s.%s[%d]", field, peersName, i)
		if err := validPeer(f, &p); err != nil {
			return err
		}
	}
	for i, p := range ports {
		f := fmt.Sprintf("%s.ports[%d]", field, i)
		if err := validPort(f, &p); err != nil {
			return err
		}
	}
	return nil
}

func validPeer(field string, p *networkingv1.NetworkPolicyPeer) error {
	if p.IPBlock != nil {
		if p.PodSelector != nil || p.NamespaceSelector != nil {
			return fmt.Errorf("%s: ipBlock cannot be combined with podSelector or namespaceSelector", field)
		}
		cidr, err := netip.ParsePrefix(p.IPBlock.CIDR)
		if err != nil {
			return fmt.Errorf("%s.ipBlock.cidr: %q is not a CIDR", field, p.IPBlock.CIDR)
		}
		for j, e := range p.IPBlock.Except {
			ex, err := netip.ParsePrefix(e)
			if err != nil {
				return fmt.Errorf("%s.ipBlock.except[%d]: %q is not a CIDR", field, j, e)
			}
			if ex.Addr().Is4() != cidr.Addr().Is4() || ex.Bits() <= cidr.Bits() || !cidr.Contains(ex.Addr()) {
				return fmt.Errorf("%s.ipBlock.except[%d]: %s must be strictly within %s", field, j, e, p.IPBlock.CIDR)
			}
		}
		return nil
	}
	if p.PodSelector == nil && p.NamespaceSelector == nil {
		return errors.New(field + ": needs one of podSelector, namespaceSelector or ipBlock")
	}
	if p.PodSelector != nil {
		if err := validSelector(field+".podSelector", p.PodSelector); err != nil {
			return err
		}
	}
	if p.NamespaceSelector != nil {
		if err := validSelector(field+".namespaceSelector", p.NamespaceSelector); err != nil {
			return err
		}
	}
	return nil
}

func validPort(field string, p *networkingv1.NetworkPolicyPort) error {
	if p.Protocol != nil {
		switch *p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			return fmt.Errorf("%s.protocol: %q is not TCP, UDP or SCTP", field, *p.Protocol)
		}
	}
	if p.Port == nil {
		if p.EndPort != nil {
			return fmt.Errorf("%s.endPort: needs a numeric port", field)
		}
		return nil
	}
	if p.Port.Type == intstr.String {
		if errs := validation.IsValidPortName(p.Port.StrVal); len(errs) > 0 {
			return fmt.Errorf("%s.port: %q: %s", field, p.Port.StrVal, errs[0])
		}
		if p.EndPort != nil {
			return fmt.Errorf("%s.endPort: cannot be used with the named port %q", field, p.Port.StrVal)
		}
		return nil
	}
	if p.Port.IntVal < 1 || p.Port.IntVal > 65535 {
		return fmt.Errorf("%s.port: %d is not in 1-65535", field, p.Port.IntVal)
	}
	if p.EndPort != nil && (*p.EndPort < p.Port.IntVal || *p.EndPort > 65535) {
		return fmt.Errorf("%s.endPort: %d must be in %d-65535", field, *p.EndPort, p.Port.IntVal)
	}
	return nil
}

// ValidPodMeta checks a pod's namespace, name and labels as Kubernetes
// would, so that gossiped and CNI-supplied metadata cannot smuggle in
// values no selector could express.
func ValidPodMeta(namespace, name string, lbls map[string]string) error {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %s", namespace, errs[0])
	}
	if name != "" {
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return fmt.Errorf("pod name %q: %s", name, errs[0])
		}
	}
	return ValidLabels(lbls)
}

// maxPodUIDLen bounds a pod UID: the API server's are UUIDs (36 bytes),
// a static pod's a hex digest (32).
const maxPodUIDLen = 64

// ValidPodUID checks a pod UID as the runtime passes it (K8S_POD_UID) and
// records carry it: empty (not said), or up to 64 letters, digits, '-',
// '_' and '.'.
func ValidPodUID(uid string) error {
	if len(uid) > maxPodUIDLen {
		return fmt.Errorf("pod UID of %d bytes: at most %d are allowed", len(uid), maxPodUIDLen)
	}
	for _, c := range []byte(uid) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("pod UID %q: only letters, digits, '-', '_' and '.' are allowed", uid)
		}
	}
	return nil
}

// MaxLabels bounds how many labels a pod may carry through Loom.
const MaxLabels = 64

// ValidLabels checks label keys and values.
func ValidLabels(lbls map[string]string) error {
	if len(lbls) > MaxLabels {
		return fmt.Errorf("%d labels: at most %d are allowed", len(lbls), MaxLabels)
	}
	for k, v := range lbls {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("label key %q: %s", k, errs[0])
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("label %s value %q: %s", k, v, errs[0])
		}
	}
	return nil
}
