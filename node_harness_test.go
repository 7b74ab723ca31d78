package oauth2jwt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nodeHarness returns the node binary for an npm harness under dir, or
// skips (fails when OAUTH2JWT_MCP_CLIENT=required, as CI sets) when node
// or one of the harness's packages is missing. what names the test in the
// message.
func nodeHarness(t *testing.T, dir string, pkgs []string, what string) string {
	t.Helper()
	skip := t.Skip
	if os.Getenv("OAUTH2JWT_MCP_CLIENT") == "required" {
		skip = t.Fatal
	}
	for _, pkg := range pkgs {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			skip(dir + "/node_modules is missing: run `npm ci` in " + dir + " to run the " + what)
		}
	}
	node, err := exec.LookPath("node")
	if err != nil {
		skip("node is not installed: the " + what + " needs Node.js 20 or later")
	}
	return node
}

// startNodeAS runs dir/as.mjs on a loopback listener this test opens and
// hands over as fd 3 (so no port can be taken in between), with the
// environment env(issuer), waits for its ready line and returns its
// issuer. The server ends with the test: its stdin closes (as.mjs exits
// then), and it is killed if it has not exited 10 s later.
func startNodeAS(t *testing.T, node, dir string, env func(issuer string) []string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	lnFile, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatalf("listener file: %v", err)
	}
	defer lnFile.Close()
	issuer := "http://" + ln.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, "as.mjs")
	cmd.Dir = dir
	cmd.Env = append(env(issuer), "AS_LISTEN_FD=3")
	cmd.ExtraFiles = []*os.File{lnFile}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node as.mjs: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel()
			<-done
		}
		cancel()
		if t.Failed() {
			t.Logf("as.mjs stderr:\n%s", stderr.String())
		}
	})

	ready := make(chan error, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, err := br.ReadString('\n')
		if err == nil && !strings.Contains(line, `"ready"`) {
			err = fmt.Errorf("unexpected first line %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, br)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("as.mjs did not start: %v\nstderr: %s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("as.mjs did not start within 30s\nstderr: %s", stderr.String())
	}
	return issuer
}
