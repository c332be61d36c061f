package status

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// WriteTable prints r for people: one row per instance, a total row, why
// each down instance is down, and nginx's counters.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tPID\tUPTIME\tCONNECTIONS\tPUSHES/S\tDROPS")
	for _, in := range r.Instances {
		if !in.Up {
			fmt.Fprintf(tw, "%d\t-\tdown\t-\t-\t-\n", in.ID)
			continue
		}
		st := in.Status
		uptime := (time.Duration(st.UptimeSeconds) * time.Second).String()
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%s\t%d\n", in.ID, st.PID, uptime, st.Connections, rate(in.PushesPerSecond), st.Counters.Drops)
	}
	t := r.Totals
	fmt.Fprintf(tw, "total\t%d/%d up\t\t%d\t%s\t%d\n", t.Up, t.Instances, t.Connections, rate(t.PushesPerSecond), t.Drops)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, in := range r.Instances {
		if !in.Up {
			fmt.Fprintf(w, "instance %d is down: %s\n", in.ID, in.Error)
		}
	}
	n := r.Nginx
	if !n.Up && n.URL == "" {
		_, err := fmt.Fprintf(w, "nginx: stub_status %s\n", n.Error)
		return err
	}
	if !n.Up {
		_, err := fmt.Fprintf(w, "nginx: no stub_status at %s: %s\n", n.URL, n.Error)
		return err
	}
	_, err := fmt.Fprintf(w, "nginx: %d active connections (reading %d, writing %d, waiting %d); %d accepted, %d handled, %d requests\n",
		n.Active, n.Reading, n.Writing, n.Waiting, n.Accepts, n.Handled, n.Requests)
	return err
}

func rate(r float64) string { return strconv.FormatFloat(r, 'f', 1, 64) }
