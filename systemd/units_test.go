package systemd

import (
	"bytes"
	"encoding"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

// maxExposure is the highest `systemd-analyze security` score the service
// may have (0 is fully locked down, 10 is unprotected).
const maxExposure = 2.5

var unitNames = []string{"wsgate@.service", "wsgate-ws@.socket", "wsgate-push@.socket", "wsgate.target"}

// unit is a parsed unit file: section, key, values in file order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n+1, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	return u
}

// get returns the last value of key, as systemd uses for single-valued keys.
func (u unit) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// list returns the space-separated words of every value of key.
func (u unit) list(section, key string) []string {
	var out []string
	for _, v := range u[section][key] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// TestUnitsMatchConfig checks the units against the contract they share with
// config.Default() and the sidecar (SPEC §1, §5).
func TestUnitsMatchConfig(t *testing.T) {
	def := config.Default()
	sockets := map[string]func(int) string{"ws": def.WSSocket, "push": def.PushSocket}
	for kind, path := range sockets {
		s := parseUnit(t, "wsgate-"+kind+"@.socket")
		expect := map[string]string{
			"ListenStream": strings.Replace(path(1), "1.sock", "%i.sock", 1),
			// The sidecar picks its listeners by these names.
			"FileDescriptorName": kind,
			"Service":            "wsgate@%i.service",
			// nginx's workers (www-data on Debian) connect; nobody else.
			"SocketGroup": "www-data",
			"SocketMode":  "0660",
		}
		for k, want := range expect {
			if got := s.get("Socket", k); got != want {
				t.Errorf("wsgate-%s@.socket: %s=%s, want %s", kind, k, got, want)
			}
		}
		if got := strings.ReplaceAll(s.get("Socket", "ListenStream"), "%i", "3"); got != path(3) {
			t.Errorf("wsgate-%s@.socket: instance 3 listens on %s; the sidecar and nginx use %s", kind, got, path(3))
		}
	}

	svc := parseUnit(t, "wsgate@.service")
	expect := map[string]string{
		"ExecStart":   "/usr/local/bin/wsgate serve -config /etc/wsgate/wsgate.toml -instance %i",
		"Type":        "notify",
		"Restart":     "on-failure",
		"KillSignal":  "SIGTERM",
		"DynamicUser": "yes",
	}
	for k, want := range expect {
		if got := svc.get("Service", k); got != want {
			t.Errorf("wsgate@.service: %s=%s, want %s", k, got, want)
		}
	}
	if got, want := svc.list("Service", "Sockets"), []string{"wsgate-ws@%i.socket", "wsgate-push@%i.socket"}; !slices.Equal(got, want) {
		t.Errorf("wsgate@.service: Sockets=%v, want %v", got, want)
	}
	stop, err := time.ParseDuration(svc.get("Service", "TimeoutStopSec"))
	if err != nil {
		t.Errorf("wsgate@.service: TimeoutStopSec: %v", err)
	} else if stop <= def.ShutdownTimeout.D() {
		t.Errorf("wsgate@.service: TimeoutStopSec=%s must be above shutdown_timeout (%s), or systemd kills a sidecar still closing its clients", stop, def.ShutdownTimeout.D())
	}
	if n, err := strconv.Atoi(svc.get("Service", "LimitNOFILE")); err != nil || n < 65536 {
		t.Errorf("wsgate@.service: LimitNOFILE=%s, want a number of at least 65536", svc.get("Service", "LimitNOFILE"))
	}
	if !slices.Contains(svc.list("Service", "RestrictAddressFamilies"), "AF_UNIX") {
		t.Errorf("wsgate@.service: RestrictAddressFamilies=%v lacks AF_UNIX, which sd_notify needs", svc.list("Service", "RestrictAddressFamilies"))
	}
	// A RuntimeDirectory= would be the socket directory, and systemd removes
	// it, with the sockets systemd holds in it, whenever the service stops.
	if v := svc.get("Service", "RuntimeDirectory"); v != "" {
		t.Errorf("wsgate@.service: RuntimeDirectory=%s would delete the held sockets on every stop", v)
	}

	var wantAlso []string
	for i := 1; i <= def.Instances; i++ {
		wantAlso = append(wantAlso, fmt.Sprintf("wsgate-ws@%d.socket", i), fmt.Sprintf("wsgate-push@%d.socket", i))
	}
	if got := parseUnit(t, "wsgate.target").list("Install", "Also"); !slices.Equal(got, wantAlso) {
		t.Errorf("wsgate.target: Also=%v, want the sockets of instances 1..%d (the default `instances`): %v", got, def.Instances, wantAlso)
	}
}

// TestDefaultConfigFile checks the wsgate.toml that `make install` ships:
// as shipped it is config.Default(), and uncommenting every setting it shows
// still gives config.Default(), with every key documented exactly once.
func TestDefaultConfigFile(t *testing.T) {
	data, err := os.ReadFile("wsgate.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%+v", config.Default())
	c, err := config.Parse(bytes.NewReader(data), "wsgate.toml")
	if err != nil {
		t.Fatalf("as shipped: %v", err)
	}
	if got := fmt.Sprintf("%+v", c); got != want {
		t.Errorf("as shipped:\n got %s\nwant %s", got, want)
	}

	setting := regexp.MustCompile(`(?m)^# ([a-z_]+) *=(.*)$`)
	uncommented := setting.ReplaceAll(data, []byte("$1 =$2"))
	c, err = config.Parse(bytes.NewReader(uncommented), "wsgate.toml (uncommented)")
	if err != nil {
		t.Fatalf("a documented setting is wrong: %v", err)
	}
	if got := fmt.Sprintf("%+v", c); got != want {
		t.Errorf("the values shown are not the defaults:\n got %s\nwant %s", got, want)
	}

	var documented []string
	table := ""
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "[") {
			table = strings.Trim(line, "[]") + "."
		} else if m := setting.FindStringSubmatch(line); m != nil {
			documented = append(documented, table+m[1])
		}
	}
	keys := tomlKeys(reflect.TypeFor[config.Config](), "")
	slices.Sort(documented)
	slices.Sort(keys)
	if !slices.Equal(documented, keys) {
		t.Errorf("wsgate.toml documents\n  %v\nconfig.Config has\n  %v", documented, keys)
	}
}

// tomlKeys lists the dotted TOML keys of a config struct.
func tomlKeys(typ reflect.Type, prefix string) []string {
	textType := reflect.TypeFor[encoding.TextUnmarshaler]()
	var keys []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(textType) {
			keys = append(keys, tomlKeys(f.Type, prefix+name+".")...)
		} else {
			keys = append(keys, prefix+name)
		}
	}
	return keys
}

// install runs `make install` into a scratch root that also holds the host's
// own systemd units (the targets ours depend on), and returns the root.
// before, if set, prepares the root first.
func install(t *testing.T, before func(root string), vars ...string) string {
	t.Helper()
	root := t.TempDir()
	var hostUnits string
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(d, "sysinit.target")); err == nil {
			hostUnits = d
			break
		}
	}
	if hostUnits == "" {
		t.Fatal("no host systemd unit directory with sysinit.target, though systemd-analyze is installed")
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", hostUnits, filepath.Join(root, "usr/lib/systemd/system")).CombinedOutput(); err != nil {
		t.Fatalf("copying %s: %v\n%s", hostUnits, err, out)
	}
	if before != nil {
		before(root)
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-C", repo, "install", "DESTDIR=" + root, "BIN=" + filepath.Join(t.TempDir(), "wsgate")}, vars...)
	runMake(t, args...)
	return root
}

// runMake runs make, not as part of the jobserver of a `make test` this
// runs under, and returns its output.
func runMake(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", args...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=")
	})
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestSudoBuild: under `sudo make install` root builds in a checkout
// another user owns, which git refuses unless told it is safe; the binary
// must still name its commit rather than "dev", and bin/ stay the user's.
func TestSudoBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to build in a checkout another user owns")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	head, err := exec.Command("git", "-c", "safe.directory=*", "-C", repo, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skip("not a git checkout")
	}
	clone := filepath.Join(t.TempDir(), "wsgate")
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("git", "-c", "safe.directory=*", "clone", "-q", repo, clone)
	run("cp", filepath.Join(repo, "Makefile"), clone) // the Makefile under test, committed or not
	run("chown", "-R", "65534:65534", clone)
	bin := filepath.Join(t.TempDir(), "wsgate")
	runMake(t, "-C", clone, "build", "BIN="+bin)
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("wsgate version: %v\n%s", err, out)
	}
	if want := "commit " + strings.TrimSpace(string(head)); !strings.Contains(string(out), want) || strings.HasPrefix(string(out), "wsgate dev ") {
		t.Errorf("wsgate version built by root in another user's checkout says %q; want a version from git and %q", out, want)
	}

	// The binary and bin/ that sudo's root builds belong to the user who
	// ran sudo, whose next make must be able to overwrite them.
	cmd := exec.Command("make", "-s", "--no-print-directory", "-C", clone, "build")
	cmd.Env = append(os.Environ(), "SUDO_UID=65534", "SUDO_GID=65534")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build under sudo: %v\n%s", err, out)
	}
	for _, p := range []string{filepath.Join(clone, "bin"), filepath.Join(clone, "bin", "wsgate")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s is owned by %d:%d after a build under sudo, want the user's 65534:65534", p, st.Uid, st.Gid)
		}
	}
}

func needAnalyze(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd): the units are not verified")
	}
}

// verify runs `systemd-analyze verify` on units under root; it exits 0 on
// parse warnings, so any output counts as a failure.
func verify(root string, units ...string) (string, error) {
	args := []string{"verify", "--root=" + root}
	args = append(args, units...)
	out, err := exec.Command("systemd-analyze", args...).CombinedOutput()
	return string(out), err
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// exposure runs `systemd-analyze security --offline=yes` on a service file.
func exposure(root, service string) (float64, string, error) {
	out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--root="+root,
		"--threshold="+strconv.Itoa(int(maxExposure*10)), service).CombinedOutput()
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		return 0, string(out), fmt.Errorf("no exposure level in the output (%v)", err)
	}
	score, perr := strconv.ParseFloat(string(m[1]), 64)
	if perr != nil {
		return 0, string(out), perr
	}
	return score, string(out), err
}

func TestInstalledUnits(t *testing.T) {
	needAnalyze(t)
	root := install(t, nil)
	unitDir := filepath.Join(root, "usr/local/lib/systemd/system")
	var paths []string
	for _, u := range unitNames {
		paths = append(paths, filepath.Join(unitDir, u))
	}

	t.Run("layout", func(t *testing.T) {
		for _, u := range unitNames {
			want, _ := os.ReadFile(u)
			if got, err := os.ReadFile(filepath.Join(unitDir, u)); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: installed with PREFIX=/usr/local it should be unchanged (err %v)", u, err)
			}
		}
		want, _ := os.ReadFile("wsgate.toml")
		if got, err := os.ReadFile(filepath.Join(root, "etc/wsgate/wsgate.toml")); err != nil || !bytes.Equal(got, want) {
			t.Errorf("/etc/wsgate/wsgate.toml is not systemd/wsgate.toml (err %v)", err)
		}
		checkSnippets(t, root, "/etc/nginx", config.Default().Instances)
	})

	t.Run("verify", func(t *testing.T) {
		if out, err := verify(root, paths...); err != nil || out != "" {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		// The check above would pass on a verify that ignores its input.
		broken := filepath.Join(unitDir, "wsgate-broken@.service")
		svc, _ := os.ReadFile(filepath.Join(unitDir, "wsgate@.service"))
		if err := os.WriteFile(broken, append(svc, "\n[Service]\nNoSuchKey=1\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(broken)
		if out, _ := verify(root, broken); !strings.Contains(out, "NoSuchKey") {
			t.Errorf("systemd-analyze verify said nothing about an unknown key: %q", out)
		}
	})

	t.Run("security", func(t *testing.T) {
		score, out, err := exposure(root, paths[0])
		t.Logf("wsgate@.service exposure %.1f", score)
		if err != nil || score > maxExposure {
			t.Errorf("exposure %.1f, want at most %.1f (%v):\n%s", score, maxExposure, err, out)
		}
		// The same measure on an unhardened service must fail.
		plain := filepath.Join(unitDir, "wsgate-plain.service")
		if err := os.WriteFile(plain, []byte("[Service]\nExecStart=/usr/local/bin/wsgate version\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(plain)
		if score, out, err := exposure(root, plain); err == nil || score <= maxExposure {
			t.Errorf("an unhardened service scored %.1f (err %v):\n%s", score, err, out)
		}
	})

	t.Run("enable target", func(t *testing.T) {
		if _, err := exec.LookPath("systemctl"); err != nil {
			t.Skip("systemctl is not installed")
		}
		if out, err := exec.Command("systemctl", "--root="+root, "enable", "wsgate.target").CombinedOutput(); err != nil {
			t.Fatalf("systemctl enable wsgate.target: %v\n%s", err, out)
		}
		var want []string
		for i := 1; i <= config.Default().Instances; i++ {
			want = append(want, fmt.Sprintf("wsgate-push@%d.socket", i), fmt.Sprintf("wsgate-ws@%d.socket", i))
		}
		slices.Sort(want)
		for _, dir := range []string{"wsgate.target.wants", "sockets.target.wants"} {
			got := wants(t, filepath.Join(root, "etc/systemd/system", dir))
			if !slices.Equal(got, want) {
				t.Errorf("after enabling wsgate.target, %s holds %v, want %v", dir, got, want)
			}
		}
		if got := wants(t, filepath.Join(root, "etc/systemd/system/multi-user.target.wants")); !slices.Equal(got, []string{"wsgate.target"}) {
			t.Errorf("multi-user.target.wants holds %v, want [wsgate.target]", got)
		}
		if out, err := exec.Command("systemctl", "--root="+root, "disable", "wsgate.target").CombinedOutput(); err != nil {
			t.Fatalf("systemctl disable wsgate.target: %v\n%s", err, out)
		}
		if got := wants(t, filepath.Join(root, "etc/systemd/system/sockets.target.wants")); len(got) != 0 {
			t.Errorf("after disabling wsgate.target, sockets.target.wants still holds %v", got)
		}
	})
}

// TestInstallPrefix installs with another PREFIX and SYSCONFDIR over an
// existing config: the units land where systemd finds them, ExecStart follows
// both, the config is kept, and the nginx snippets are rendered from it.
func TestInstallPrefix(t *testing.T) {
	needAnalyze(t)
	mine := []byte("# mine\ninstances = 2\n")
	root := install(t, func(root string) {
		dir := filepath.Join(root, "srv/etc/wsgate")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "wsgate.toml"), mine, 0o600); err != nil {
			t.Fatal(err)
		}
	}, "PREFIX=/opt/wsgate", "SYSCONFDIR=/srv/etc")

	if got, _ := os.ReadFile(filepath.Join(root, "srv/etc/wsgate/wsgate.toml")); !bytes.Equal(got, mine) {
		t.Errorf("make install replaced an existing config with:\n%s", got)
	}
	// systemd does not search /opt/wsgate/lib/systemd/system.
	unitDir := filepath.Join(root, "etc/systemd/system")
	svc := parseUnit(t, filepath.Join(unitDir, "wsgate@.service"))
	if got, want := svc.get("Service", "ExecStart"), "/opt/wsgate/bin/wsgate serve -config /srv/etc/wsgate/wsgate.toml -instance %i"; got != want {
		t.Errorf("ExecStart=%s, want %s", got, want)
	}
	var paths []string
	for _, u := range unitNames {
		paths = append(paths, filepath.Join(unitDir, u))
	}
	if out, err := verify(root, paths...); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	checkSnippets(t, root, "/srv/etc/nginx", 2)
}

// checkSnippets checks that make install rendered `wsgate nginx -part` into an
// http{}-level file and a location file, rendered for that many instances.
func checkSnippets(t *testing.T, root, nginxDir string, instances int) {
	t.Helper()
	httpConf, err := os.ReadFile(filepath.Join(root, nginxDir, "conf.d/wsgate.conf"))
	if err != nil {
		t.Fatal(err)
	}
	loc, err := os.ReadFile(filepath.Join(root, nginxDir, "snippets/wsgate-location.conf"))
	if err != nil {
		t.Fatal(err)
	}
	topLocation := regexp.MustCompile(`(?m)^location\s`)
	topUpstream := regexp.MustCompile(`(?m)^upstream\s`)
	if topLocation.Match(httpConf) || !topUpstream.Match(httpConf) {
		t.Errorf("conf.d/wsgate.conf is not the http{}-level snippet:\n%s", httpConf)
	}
	if n := len(topLocation.FindAll(loc, -1)); n != 1 || topUpstream.Match(loc) {
		t.Errorf("snippets/wsgate-location.conf is not one location block:\n%s", loc)
	}
	if n := len(regexp.MustCompile(`unix:\S*/ws-\d+\.sock`).FindAll(httpConf, -1)); n != instances {
		t.Errorf("conf.d/wsgate.conf names %d ws sockets, want %d (the installed config's instances)", n, instances)
	}
}

// wants lists the names in a .wants directory; none when it does not exist.
func wants(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// TestRaceReady: make test's race detector needs cgo, which Go turns off
// where it finds no C compiler (a fresh Debian). Without a compiler, and
// with no apt-get to install one, make test stops before the tests with a
// message naming what to install, instead of go test's "-race requires
// cgo"; with cgo it goes on quietly.
func TestRaceReady(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Skip("no make")
	}
	// A PATH with only id on it: no apt-get, so no install is tried, as
	// root or not. The go on it reports cgo as told.
	dir := t.TempDir()
	id, err := exec.LookPath("id")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(id, filepath.Join(dir, "id")); err != nil {
		t.Fatal(err)
	}
	for _, cgo := range []string{"0", "1"} {
		goBin := filepath.Join(dir, "go"+cgo)
		if err := os.WriteFile(goBin, []byte("#!/bin/sh\necho "+cgo+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(makeBin, "-s", "--no-print-directory", "-C", repo, "race-ready", "GO="+goBin)
		cmd.Env = []string{"PATH=" + dir}
		out, err := cmd.CombinedOutput()
		switch {
		case cgo == "1" && (err != nil || len(out) > 0):
			t.Errorf("with cgo: make race-ready: %v %q, want no error and no output", err, out)
		case cgo == "0" && (err == nil || !strings.Contains(string(out), "go test -race needs cgo") || !strings.Contains(string(out), "apt-get install gcc")):
			t.Errorf("without a C compiler: make race-ready: %v %q, want a failure that names gcc", err, out)
		}
	}
}
