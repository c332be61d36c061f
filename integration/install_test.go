package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/nginx"
)

// make install renders the nginx snippets that each combination of
// nginx.client_proxy and nginx.push_proxy has (with push_proxy = "none",
// none for the push ports), and only those, keeping an
// existing TOML; nginx -t accepts an nginx.conf that includes them as
// systemd/README.md says; and a snippet left from another combination is
// named in a warning.
func TestMakeInstallSnippets(t *testing.T) {
	needNginx(t)
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	nginxBin, err := exec.LookPath("nginx")
	if err != nil {
		nginxBin = "/usr/sbin/nginx"
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	base := wstest.FreePorts(t, "127.0.0.1", 4)
	var dest string
	install := func(t *testing.T) string {
		t.Helper()
		cmd := exec.Command("make", "-s", "--no-print-directory", "-C", repo, "install",
			"DESTDIR="+dest, "PREFIX=/usr", "BIN="+filepath.Join(dest, "build", "wsgate"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
		return string(out)
	}
	for _, proxies := range [][2]string{{"http", "http"}, {"stream", "http"}, {"http", "stream"}, {"stream", "stream"}, {"http", "none"}, {"stream", "none"}} {
		t.Run(proxies[0]+"-"+proxies[1], func(t *testing.T) {
			if proxies[0] == "stream" || proxies[1] == "stream" {
				needStreamModule(t)
			}
			dest = t.TempDir()
			toml := fmt.Sprintf("instances = 2\nruntime_dir = %q\nlisten = [\"127.0.0.1:%d\"]\n[push]\nport_base = %d\n[nginx]\nclient_proxy = %q\npush_proxy = %q\n",
				filepath.Join(dest, "run"), base+2, base, proxies[0], proxies[1])
			tomlPath := filepath.Join(dest, "etc", "wsgate", "wsgate.toml")
			if err := os.MkdirAll(filepath.Dir(tomlPath), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(tomlPath, []byte(toml), 0o644); err != nil {
				t.Fatal(err)
			}
			out := install(t)
			if kept, err := os.ReadFile(tomlPath); err != nil || string(kept) != toml {
				t.Fatalf("the TOML was not kept: %v\n%s", err, kept)
			}
			if strings.Contains(out, "warning") {
				t.Errorf("a warning on a fresh install:\n%s", out)
			}
			// With push_proxy = "none", the drop-ins that give the push
			// sockets their ports (systemd.WriteDropIns has the details).
			dropIn := filepath.Join(dest, "usr/lib/systemd/system/wsgate-push@2.socket.d/wsgate-push-port.conf")
			if _, err := os.Stat(dropIn); (err == nil) != (proxies[1] == "none") || strings.Contains(out, "wrote "+dropIn) != (proxies[1] == "none") {
				t.Errorf("push_proxy %q: %s exists: %v\n%s", proxies[1], dropIn, err == nil, out)
			}
			etc := filepath.Join(dest, "etc", "nginx")
			exists := func(name string) bool {
				_, err := os.Stat(filepath.Join(etc, name))
				return err == nil
			}
			clientStream, pushStream := proxies[0] == "stream", proxies[1] == "stream"
			for name, want := range map[string]bool{
				"conf.d/wsgate.conf":            true,
				"wsgate-stream.conf":            clientStream || pushStream,
				"snippets/wsgate-location.conf": !clientStream,
			} {
				if exists(name) != want {
					t.Errorf("%s exists: %v, want %v\n%s", name, !want, want, out)
				}
			}
			httpPart, _ := os.ReadFile(filepath.Join(etc, "conf.d/wsgate.conf"))
			if strings.Contains(string(httpPart), "upstream wsgate_push_1") != (proxies[1] == "http") {
				t.Errorf("conf.d/wsgate.conf with push_proxy %q:\n%s", proxies[1], httpPart)
			}

			// The user's nginx.conf, as systemd/README.md has it.
			conf := fmt.Sprintf("pid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\n", dest, dest)
			if exists("wsgate-stream.conf") {
				conf = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n" + conf +
					"stream {\n    include " + filepath.Join(etc, "wsgate-stream.conf") + ";\n}\n"
			}
			conf += "http {\n    include " + filepath.Join(etc, "conf.d/*.conf") + ";\n" +
				fmt.Sprintf("    server {\n        listen 127.0.0.1:%d;\n", base+3)
			if exists("snippets/wsgate-location.conf") {
				conf += "        include " + filepath.Join(etc, "snippets/wsgate-location.conf") + ";\n"
			}
			conf += "    }\n}\n"
			confPath := filepath.Join(dest, "nginx.conf")
			if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := nginx.Command(nginxBin, "-t", "-q", "-p", dest+"/", "-c", confPath).CombinedOutput(); err != nil {
				t.Fatalf("nginx -t: %v\n%s\nnginx.conf:\n%s", err, out, conf)
			}

			// A snippet of the other kind, left from before, is named.
			stale := "snippets/wsgate-location.conf"
			if !clientStream {
				stale = "wsgate-stream.conf"
			}
			if !exists(stale) { // http-stream has both
				if err := os.WriteFile(filepath.Join(etc, stale), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if out := install(t); !strings.Contains(out, "warning: "+filepath.Join(etc, stale)+" is left") {
					t.Errorf("no warning about the stale %s:\n%s", stale, out)
				}
			}

			// A TOML with a mistake fails the install and leaves the
			// snippets as they were.
			before, _ := os.ReadFile(filepath.Join(etc, "conf.d/wsgate.conf"))
			if err := os.WriteFile(tomlPath, []byte(toml+"push_proxi = \"stream\"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("make", "-s", "--no-print-directory", "-C", repo, "install",
				"DESTDIR="+dest, "PREFIX=/usr", "BIN="+filepath.Join(dest, "build", "wsgate"))
			if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "push_proxi") {
				t.Errorf("make install of a bad TOML: %v\n%s", err, out)
			}
			if after, _ := os.ReadFile(filepath.Join(etc, "conf.d/wsgate.conf")); string(after) != string(before) {
				t.Errorf("a bad TOML changed conf.d/wsgate.conf:\n%s", after)
			}
		})
	}
}
