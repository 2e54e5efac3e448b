package cdn_test

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkExport fetches one cached export file over loopback with
// keep-alive connections: the origin's side of `make bench` row (d).
func BenchmarkExport(b *testing.B) {
	for _, bc := range []struct {
		name string
		hdr  [2]string
	}{{"full", [2]string{}}, {"not-modified", [2]string{"If-None-Match", ""}}} {
		b.Run(bc.name, func(b *testing.B) {
			o := start(b)
			url := o.url + "/exports/" + o.zipSum + ".zip"
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			b.SetBytes(int64(len(o.zip)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("GET", url, nil)
					if bc.hdr[0] != "" {
						req.Header.Set(bc.hdr[0], `"`+o.zipSum+`"`)
					}
					resp, err := c.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}
