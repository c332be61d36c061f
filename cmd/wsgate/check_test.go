package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/nginx"
)

// bin is the wsgate binary TestMain builds for the tests to run.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsgate-bin-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "wsgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		panic(fmt.Sprintf("go build: %v\n%s", err, out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs the wsgate binary and returns its exit code, stdout and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// writeFile writes a TOML file into dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	def := config.Default()
	_, noNginx := nginx.Binary(&def)

	good := writeFile(t, dir, "good.toml", "instances = 2\nlocation = \"/live\"\n")
	code, stdout, stderr := run(t, "check", "-config", good)
	if code != 0 || !strings.Contains(stdout, good+": configuration ok") {
		t.Errorf("check good.toml: exit %d\n%s%s", code, stdout, stderr)
	}
	want := "-t: generated nginx.conf ok"
	if noNginx != nil {
		want = "nginx -t skipped"
	}
	if !strings.Contains(stdout, want) {
		t.Errorf("check good.toml does not say %q:\n%s", want, stdout)
	}

	bad := writeFile(t, dir, "bad.toml", "instances = 2\n\n[push]\nbogus = 1\n")
	code, stdout, stderr = run(t, "check", "-config", bad)
	if want := bad + ":4: push.bogus: unknown key"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("check bad.toml: exit %d, want 1 and %q\n%s%s", code, want, stdout, stderr)
	}

	// A path in nginx.binary is that nginx or none: no fallback to
	// /usr/sbin/nginx, and no nginx -t skipped as if nginx were missing.
	nobin := writeFile(t, dir, "nobin.toml", "[nginx]\nbinary = \"/nonexistent/nginx\"\n")
	if code, stdout, stderr := run(t, "check", "-config", nobin); code != 1 || !strings.Contains(stderr, "nginx.binary:") || !strings.Contains(stderr, "/nonexistent/nginx") {
		t.Errorf("check with nginx.binary a missing path: exit %d, want 1 naming it\n%s%s", code, stdout, stderr)
	}

	if noNginx != nil {
		t.Skipf("skipping the nginx -t failures: %v", noNginx)
	}
	nomod := writeFile(t, dir, "nomod.toml", "[nginx]\nclient_proxy = \"stream\"\nstream_module = \"/nonexistent/ngx_stream_module.so\"\n")
	if code, stdout, stderr := run(t, "check", "-config", nomod); code != 1 || !strings.Contains(stderr, "apt-get install libnginx-mod-stream") {
		t.Errorf("check with a missing stream module: exit %d, want 1 naming the package\n%s%s", code, stdout, stderr)
	}
	for name, toml := range map[string]string{
		// Config validation cannot see that localhost is 127.0.0.1; nginx
		// -t fails on the duplicate.
		"duplicate listen": `listen = ["localhost:8080", "127.0.0.1:8080"]`,
	} {
		path := writeFile(t, dir, "nginx.toml", toml+"\n")
		code, stdout, stderr = run(t, "check", "-config", path)
		nginxSaid := strings.Contains(stdout, "[emerg]") || strings.Contains(stdout, "[warn]")
		if code != 1 || !nginxSaid || !strings.Contains(stderr, "nginx.conf") {
			t.Errorf("check with %s: exit %d, want 1 with nginx's output\n%s%s", name, code, stdout, stderr)
		}
	}
}

func TestNginx(t *testing.T) {
	path := writeFile(t, t.TempDir(), "wsgate.toml", "instances = 3\n[push]\nmax_body = \"64KiB\"\n")
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := nginx.Snippets(&c)
	if err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := run(t, "nginx", "-config", path); code != 0 || stdout != want {
		t.Errorf("wsgate nginx: exit %d, printed\n%s%s\nwant\n%s", code, stdout, stderr, want)
	}

	state := t.TempDir()
	want, err = nginx.Standalone(&c, nginx.DefaultOptions(state))
	if err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := run(t, "nginx", "-config", path, "-standalone", "-state", state); code != 0 || stdout != want {
		t.Errorf("wsgate nginx -standalone: exit %d, printed\n%s%s\nwant\n%s", code, stdout, stderr, want)
	}

	for part, render := range map[string]func(*config.Config) (string, error){"http": nginx.HTTP, "location": nginx.Location} {
		if want, err = render(&c); err != nil {
			t.Fatal(err)
		}
		if code, stdout, stderr := run(t, "nginx", "-config", path, "-part", part); code != 0 || stdout != want {
			t.Errorf("wsgate nginx -part %s: exit %d, printed\n%s%s\nwant\n%s", part, code, stdout, stderr, want)
		}
	}
	if code, _, stderr := run(t, "nginx", "-part", "server"); code != 1 || !strings.Contains(stderr, `-part "server"`) {
		t.Errorf("wsgate nginx -part server: exit %d %s", code, stderr)
	}
	if code, _, stderr := run(t, "nginx", "-config", path, "-part", "stream"); code != 1 || !strings.Contains(stderr, `its snippets are "http" and "location"`) {
		t.Errorf("wsgate nginx -part stream of an http config: exit %d %s", code, stderr)
	}
	stream := writeFile(t, t.TempDir(), "stream.toml", "[nginx]\nclient_proxy = \"stream\"\n")
	sc, err := config.Load(stream)
	if err != nil {
		t.Fatal(err)
	}
	if want, err = nginx.Stream(&sc); err != nil || !strings.Contains(want, "proxy_protocol on;") {
		t.Fatalf("%v\n%s", err, want)
	}
	if code, stdout, stderr := run(t, "nginx", "-config", stream, "-part", "stream"); code != 0 || stdout != want {
		t.Errorf("wsgate nginx -part stream: exit %d, printed\n%s%s\nwant\n%s", code, stdout, stderr, want)
	}
	if code, _, stderr := run(t, "nginx", "-config", stream, "-part", "location"); code != 1 || !strings.Contains(stderr, `its snippets are "stream" and "http"`) {
		t.Errorf("wsgate nginx -part location of a stream config: exit %d %s", code, stderr)
	}
	both := writeFile(t, t.TempDir(), "both.toml", "[nginx]\nclient_proxy = \"stream\"\npush_proxy = \"stream\"\n")
	if code, stdout, stderr := run(t, "nginx", "-config", both, "-part", "stream"); code != 0 || !strings.Contains(stdout, "proxy_protocol on;") || !strings.Contains(stdout, "proxy_pass unix:/run/wsgate/push-4.sock;") {
		t.Errorf("wsgate nginx -part stream, all stream: exit %d, printed\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := run(t, "nginx", "-config", both, "-part", "http"); code != 1 || !strings.Contains(stderr, `its snippets are "stream"`) {
		t.Errorf("wsgate nginx -part http, all stream: exit %d %s", code, stderr)
	}

	def := config.Default()
	if want, err = nginx.Snippets(&def); err != nil {
		t.Fatal(err)
	}
	if code, stdout, _ := run(t, "nginx"); code != 0 || stdout != want {
		t.Errorf("wsgate nginx without -config: exit %d, not the defaults' snippets", code)
	}
}

// With the most instances nginx's master holds over 1,024 listening
// sockets. Started where the soft limit on open files is 1024 (a login on
// a fresh Debian), check still passes: wsgate gives nginx its hard limit,
// where Go alone would give nginx the 1024 it found.
func TestCheckMostInstancesUnderLowFileLimit(t *testing.T) {
	def := config.Default()
	if _, err := nginx.Binary(&def); err != nil {
		t.Skip(err)
	}
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Max < 4096 {
		t.Skipf("the hard limit on open files (%d) leaves nothing to lift: %v", l.Max, err)
	}
	port := wstest.FreePorts(t, "127.0.0.1", 1024+1)
	conf := writeFile(t, t.TempDir(), "most.toml", fmt.Sprintf(
		"instances = 1024\nlisten = [\"127.0.0.1:%d\"]\n[push]\nport_base = %d\n", port, port+1))
	out, err := exec.Command("/bin/sh", "-c", `ulimit -S -n 1024 && exec "$0" check -config "$1"`, bin, conf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "generated nginx.conf ok") {
		t.Fatalf("wsgate check with 1024 instances under a soft limit of 1024 open files: %v\n%s", err, out)
	}
}
