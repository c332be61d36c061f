package nginx

import (
	"testing"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/web"
)

// Every exact location the standalone config serves on the client listener
// is refused as the WebSocket location: it would shadow the handshake.
func TestLocationCannotShadowServedPaths(t *testing.T) {
	for _, p := range append([]string{"/_wsgate_auth"}, func() (ps []string) {
		for _, s := range web.Scripts {
			ps = append(ps, "/"+s)
		}
		return
	}()...) {
		c := config.Default()
		c.Location = p
		if c.Validate() == nil {
			t.Errorf("location %q accepted, but the generated nginx.conf serves it", p)
		}
	}
}
