package policy

// What the external tests (package policy_test, which may import
// packages that import this one) need of the internal test helpers.
var (
	TruthPods       = truthPods
	TruthNamespaces = truthNamespaces
)

// DecodeFile decodes one policy file as LoadDir would.
func DecodeFile(path string, data []byte) (Objects, error) {
	objs := Objects{Namespaces: map[string]map[string]string{}}
	err := decodeFile(path, data, &objs, map[string]string{})
	return objs, err
}
