package rig

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// HTTPClientIn returns an HTTP client whose connections are made from
// inside network namespace nsName, one per request, and a func that
// releases it.
func HTTPClientIn(nsName string) (*http.Client, func()) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.WithNetNSPath("/run/netns/"+nsName, func(ns.NetNS) error {
			var err error
			c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}, tr.CloseIdleConnections
}

// AgentHTTP is where each node's agent serves metrics and health: loomd's
// default address, inside the node's namespace (reach it with GetIn).
const AgentHTTP = "http://127.0.0.1:9641"

// GetIn fetches url from inside network namespace nsName and returns the
// status code and body.
func GetIn(nsName, url string) (int, string, error) {
	client, done := HTTPClientIn(nsName)
	defer done()
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", fmt.Errorf("get %s in %s: %w", url, nsName, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// MetricValue sums the samples of the Prometheus series name in body whose
// label set contains match.
func MetricValue(body, name, match string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.e+-]+)$`)
	total, found := 0.0, false
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		if !strings.Contains(m[1], match) {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err == nil {
			total += v
			found = true
		}
	}
	return total, found
}

// Metric fetches the node agent's metrics and sums the samples of the
// series name whose label set contains match (see MetricValue); a series
// the agent does not serve reads 0.
func (n *Node) Metric(name, match string) (float64, error) {
	code, body, err := GetIn(n.NS, AgentHTTP+"/metrics")
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("metrics of %s: status %d", n.Name, code)
	}
	if err != nil {
		return 0, err
	}
	v, _ := MetricValue(body, name, match)
	return v, nil
}
