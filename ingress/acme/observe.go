package acme

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// observer watches the ACME client's traffic for what autocert does not report: it counts orders
// created, and keeps the CA's own words when a challenge fails (autocert moves on to the next
// challenge type and finally reports only that none worked).
type observer struct {
	next   http.RoundTripper
	orders *atomic.Uint64

	mu      sync.Mutex
	lastErr string
}

// acmeObject has the fields of ACME orders and authorizations the observer reads.
type acmeObject struct {
	Status     string `json:"status"`
	Finalize   string `json:"finalize"`
	Identifier struct {
		Value string `json:"value"`
	} `json:"identifier"`
	Challenges []struct {
		Type  string `json:"type"`
		Error *struct {
			Type   string `json:"type"`
			Detail string `json:"detail"`
		} `json:"error"`
	} `json:"challenges"`
}

func (o *observer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.next.RoundTrip(req)
	if err != nil || req.Method != http.MethodPost || resp.Body == nil {
		return resp, err
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if rerr != nil {
		return resp, nil
	}
	var obj acmeObject
	if json.Unmarshal(body, &obj) != nil {
		return resp, nil
	}
	if resp.StatusCode == http.StatusCreated && obj.Finalize != "" {
		o.orders.Add(1)
	}
	if obj.Status == "invalid" {
		for _, ch := range obj.Challenges {
			if ch.Error != nil {
				o.mu.Lock()
				o.lastErr = fmt.Sprintf("%s challenge for %s failed: %s (%s)", ch.Type, obj.Identifier.Value, ch.Error.Detail, ch.Error.Type)
				o.mu.Unlock()
			}
		}
	}
	return resp, nil
}

// challengeError is the last failed challenge's error from the CA, or "".
func (o *observer) challengeError() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lastErr
}
