package web

import (
	"embed"
	"net/http"
	"path"

	goahttp "goa.design/goa/v3/http"
)

// pageFiles is the demo chat page: plain HTML, CSS and JavaScript, no build
// step and nothing loaded from elsewhere.
//
//go:embed page
var pageFiles embed.FS

// pageTypes are the page's files by path, with their content types.
var pageTypes = map[string]string{
	"/":        "text/html; charset=utf-8",
	"/app.js":  "text/javascript; charset=utf-8",
	"/app.css": "text/css; charset=utf-8",
}

// mountPage serves the demo page at GET / and its script and style sheet.
func mountPage(mux goahttp.Muxer) {
	for p, typ := range pageTypes {
		name := "page" + p
		if p == "/" {
			name = "page/index.html"
		}
		body, err := pageFiles.ReadFile(path.Clean(name))
		if err != nil {
			panic(err) // embedded at build time: cannot fail
		}
		mux.Handle(http.MethodGet, p, func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h.Set("Content-Type", typ)
			h.Set("Cache-Control", "no-cache")
			h.Set("X-Content-Type-Options", "nosniff")
			// The page may carry a token in its URL: never send it on.
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body)
		})
	}
}
