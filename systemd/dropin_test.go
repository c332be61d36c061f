package systemd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/config"
)

// With push_proxy = "none" each instance's push socket gets a drop-in with
// its ports; switching back, or to fewer instances, removes what is no
// longer needed, and nothing of the admin's.
func TestWriteDropIns(t *testing.T) {
	dir := t.TempDir()
	c := config.Default()
	c.Instances = 3
	c.Nginx.PushProxy = "none"
	c.Push.Listen = []string{"0.0.0.0", "::"}
	wrote, removed, err := WriteDropIns(dir, &c)
	if err != nil || len(wrote) != 3 || len(removed) != 0 {
		t.Fatalf("wrote %v, removed %v: %v", wrote, removed, err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "wsgate-push@2.socket.d", PushPortDropIn))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"[Socket]\nListenStream=\n", "\nListenStream=0.0.0.0:48776\n", "\nListenStream=[::]:48776\n", "\nBindIPv6Only=ipv6-only\n"} {
		if !strings.Contains(string(got), line) {
			t.Errorf("instance 2's drop-in lacks %q:\n%s", line, got)
		}
	}
	if strings.Contains(string(got), "FreeBind") {
		t.Errorf("FreeBind for wildcards:\n%s", got)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "wsgate-push@2.socket.d", PushPortDropIn)); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", fi.Mode())
	}

	// An address of the machine's own, not loopback: it may come up after
	// the sockets bind.
	c.Push.Listen = []string{"192.0.2.7"}
	if _, _, err := WriteDropIns(dir, &c); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "wsgate-push@1.socket.d", PushPortDropIn)); !strings.Contains(string(got), "\nListenStream=192.0.2.7:48775\n") || !strings.Contains(string(got), "\nFreeBind=yes\n") {
		t.Errorf("drop-in for 192.0.2.7:\n%s", got)
	}

	// Fewer instances: the third goes; a drop-in of the admin's stays.
	admin := filepath.Join(dir, "wsgate-push@3.socket.d", "admin.conf")
	if err := os.WriteFile(admin, []byte("[Socket]\nBacklog=8192\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Instances = 2
	if _, removed, err = WriteDropIns(dir, &c); err != nil || len(removed) != 1 || !strings.HasSuffix(removed[0], "wsgate-push@3.socket.d/"+PushPortDropIn) {
		t.Fatalf("removed %v: %v", removed, err)
	}
	if _, err := os.Stat(admin); err != nil {
		t.Errorf("the admin's drop-in went: %v", err)
	}

	// Back to nginx push servers: every wsgate drop-in goes, with its
	// directory once empty.
	c.Nginx.PushProxy = "http"
	if wrote, removed, err = WriteDropIns(dir, &c); err != nil || len(wrote) != 0 || len(removed) != 2 {
		t.Fatalf("wrote %v, removed %v: %v", wrote, removed, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "wsgate-push@1.socket.d")); !os.IsNotExist(err) {
		t.Errorf("empty drop-in directory left: %v", err)
	}
	if _, err := os.Stat(admin); err != nil {
		t.Errorf("the admin's drop-in went: %v", err)
	}
}
