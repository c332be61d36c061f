package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// wsgate systemd writes the push sockets' drop-ins for push_proxy = "none",
// says what it wrote and removed, and needs -dir.
func TestSystemdCommand(t *testing.T) {
	dir := t.TempDir()
	none := writeFile(t, t.TempDir(), "none.toml", "instances = 2\n[nginx]\npush_proxy = \"none\"\n")
	dropIn := filepath.Join(dir, "wsgate-push@2.socket.d", "wsgate-push-port.conf")
	if code, stdout, stderr := run(t, "systemd", "-config", none, "-dir", dir); code != 0 || !strings.Contains(stdout, "wrote "+dropIn+"\n") {
		t.Fatalf("wsgate systemd: exit %d\n%s%s", code, stdout, stderr)
	}
	if got, err := os.ReadFile(dropIn); err != nil || !strings.Contains(string(got), "\nListenStream=127.0.0.1:48776\n") {
		t.Fatalf("%s: %v\n%s", dropIn, err, got)
	}
	if code, stdout, stderr := run(t, "systemd", "-dir", dir); code != 0 || !strings.Contains(stdout, "removed "+dropIn+"\n") {
		t.Fatalf("wsgate systemd with the defaults: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := run(t, "systemd", "-config", none); code == 0 || !strings.Contains(stderr, "usage: wsgate systemd -dir DIR") {
		t.Errorf("without -dir: exit %d\n%s", code, stderr)
	}
}
