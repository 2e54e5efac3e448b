package backoffice

import "net/http"

// statisticsRoutes are the lines of the route table for the statistics pages (auditor, admin; the public page).
func (s *Service) statisticsRoutes() []route {
	return []route{
		{http.MethodGet, "/statistics", roleAuditor, s.statisticsPage, "nav.statistics"},
		{http.MethodGet, "/statistics.csv", roleAuditor, s.statisticsFile("csv", false), ""},
		{http.MethodGet, "/statistics.json", roleAuditor, s.statisticsFile("json", false), ""},
		// Anyone's: days 48 hours over, counts under 10 suppressed.
		{http.MethodGet, "/statistics-public", needAnyone, s.statisticsPublicPage, ""},
		{http.MethodGet, "/statistics-public.csv", needAnyone, s.statisticsFile("csv", true), ""},
		{http.MethodGet, "/statistics-public.json", needAnyone, s.statisticsFile("json", true), ""},
	}
}
