package nginx

import (
	"flag"
	"os"
	"testing"

	"github.com/wsgate/wsgate/config"
)

// Refresh wsgate.conf after changing the templates with
//
//	go generate ./nginx   (or: go test ./nginx -run '^TestGolden$' -update)
var update = flag.Bool("update", false, "rewrite wsgate.conf from the generator")

const goldenHeader = `# nginx/wsgate.conf: what ` + "`wsgate nginx`" + ` prints for the built-in defaults
# (config.Default()). Refresh with "go generate ./nginx"; a test fails when it
# is out of date.
`

func TestGolden(t *testing.T) {
	c := config.Default()
	s, err := Snippets(&c)
	if err != nil {
		t.Fatal(err)
	}
	want := goldenHeader + s
	if *update {
		if err := os.WriteFile("wsgate.conf", []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("wsgate.conf")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatal("wsgate.conf is out of date: run go generate ./nginx")
	}
}
