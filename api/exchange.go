package api

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// The client speaks just enough HTTP to send one request and read one
// answer over a fresh connection, instead of using net/http's client. The
// CNI plugin is started anew for every pod, and linking net/http (with
// crypto/tls and x509, which it drags in) made each start measurably
// slower: a VERSION call took 1–3 ms longer than the same binary without
// it on this project's rig. The agent serves with net/http, so the wire is
// plain HTTP and curl --unix-socket still works.
//
// Requests are HTTP/1.0: the server then closes the connection after its
// answer and never uses chunked encoding, so the body is exactly what
// follows the header, up to Content-Length or the end of the stream.

// answer is one reply of the agent.
type answer struct {
	code   int
	status string // the status line after the version, e.g. "404 Not Found"
	body   []byte
}

// exchange sends method path with body (JSON, may be nil) to the agent and
// reads its answer. Any failure is one of reaching the agent, not an answer.
func (c *Client) exchange(ctx context.Context, method, path string, body []byte) (answer, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return answer{}, err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return answer{}, err
		}
	}
	// A cancelled context interrupts a read or write in progress; the
	// deadline covers the timeout even before the context's timer fires.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.0\r\nHost: loomd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", method, path, len(body))
	req.Write(body)
	if _, err := conn.Write(req.Bytes()); err != nil {
		return answer{}, interrupted(ctx, fmt.Errorf("send request: %w", err))
	}
	a, err := readAnswer(bufio.NewReader(conn))
	if err != nil {
		return answer{}, interrupted(ctx, err)
	}
	return a, nil
}

// interrupted names the context's error when it is why I/O failed: the
// deadline set on cancellation shows only as a timeout.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// readAnswer parses an HTTP/1.x response: status line, header, body.
func readAnswer(r *bufio.Reader) (answer, error) {
	tp := textproto.NewReader(r)
	line, err := tp.ReadLine()
	if err != nil {
		return answer{}, fmt.Errorf("read status line: %w", err)
	}
	proto, status, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") {
		return answer{}, fmt.Errorf("malformed status line %q", line)
	}
	codeText, _, _ := strings.Cut(status, " ")
	code, err := strconv.Atoi(codeText)
	if err != nil || len(codeText) != 3 {
		return answer{}, fmt.Errorf("malformed status line %q", line)
	}
	header, err := tp.ReadMIMEHeader()
	if err != nil {
		return answer{}, fmt.Errorf("read header: %w", err)
	}
	if code == 204 || code == 304 {
		// No body by definition: the agent answers 204 before it goes on
		// with work of its own (answerThenReconcile), so waiting for the
		// connection to close would wait for that work.
		return answer{code: code, status: status}, nil
	}
	if te := header.Get("Transfer-Encoding"); te != "" {
		return answer{}, fmt.Errorf("unexpected Transfer-Encoding %q in an answer to HTTP/1.0", te)
	}
	if cl := header.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			return answer{}, fmt.Errorf("malformed Content-Length %q", cl)
		}
		if n > maxResponse {
			return answer{}, fmt.Errorf("answer of %d bytes exceeds the limit of %d", n, maxResponse)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return answer{}, fmt.Errorf("read body: %w", err)
		}
		return answer{code: code, status: status, body: b}, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, maxResponse+1))
	if err != nil {
		return answer{}, fmt.Errorf("read body: %w", err)
	}
	if len(b) > maxResponse {
		return answer{}, fmt.Errorf("answer exceeds the limit of %d bytes", maxResponse)
	}
	return answer{code: code, status: status, body: b}, nil
}
