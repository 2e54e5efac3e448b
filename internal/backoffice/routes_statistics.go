package backoffice

// statisticsRoutes are the lines of the route table for the statistics pages (auditor, admin; the public page).
func (s *Service) statisticsRoutes() []route {
	return nil
}
