package agent

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/loomnet/loom/api"
)

// FuzzAPIRequest feeds arbitrary bodies to the local API's request decoder
// and validation: every input is either accepted as a valid request or
// rejected with an error, never a panic.
func FuzzAPIRequest(f *testing.F) {
	f.Add([]byte(`{"containerID":"abc","ifName":"eth0","netns":"/run/netns/x"}`))
	f.Add([]byte(`{"containerID":"abc","ifName":"eth0"} trailing`))
	f.Add([]byte(`{"containerID":"","ifName":"../../x"}`))
	f.Add([]byte(`{"valid":[{"containerID":"a","ifName":"eth0"}]}`))
	f.Add([]byte(`{"unknown":1}`))
	// Found by the fuzzer: five U+FFFD runes and a digit are 6 characters
	// but 16 bytes, one more than Linux allows.
	f.Add([]byte("{\"containerID\":\"a\",\"ifName\":\"\xff\xff\xff\xff\xff0\"}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&api.AllocateRequest{}, &api.PodRef{}, &api.GCRequest{}, &api.RemovePeerRequest{}} {
			r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			if err := decode(r, v); err != nil {
				continue
			}
			switch req := v.(type) {
			case *api.AllocateRequest:
				if validateRef(req.ContainerID, req.IfName) == nil && (req.IfName == "" || len(req.IfName) > 15) {
					t.Fatalf("accepted interface name %q", req.IfName)
				}
			case *api.PodRef:
				_ = validateRef(req.ContainerID, req.IfName)
			}
		}
	})
}
