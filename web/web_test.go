package web

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestJS runs wsgate.js's unit tests (wsgate.test.js) under node's built-in
// test runner.
func TestJS(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (apt-get install nodejs); .ci/run installs it")
	}
	out, err := exec.Command(node, "--test").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	t.Logf("node --test:\n%s", out)
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "www")
	if err := Write(dir, Page{Location: `/a"b`, Upstream: true}); err != nil {
		t.Fatal(err)
	}
	index, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<meta name="wsgate-location" content="/a&#34;b">`,
		`<meta name="wsgate-upstream" content="on">`,
	} {
		if !strings.Contains(string(index), want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
	for _, name := range Scripts {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := files.ReadFile(name)
		if string(got) != string(want) {
			t.Errorf("%s differs from the embedded file", name)
		}
	}
	if err := Write(dir, Page{Location: "/ws"}); err != nil { // rewrites in place
		t.Fatal(err)
	}
	index, _ = os.ReadFile(filepath.Join(dir, "index.html"))
	if !strings.Contains(string(index), `<meta name="wsgate-upstream" content="off">`) {
		t.Error("rewritten index.html does not say upstream off")
	}
}
