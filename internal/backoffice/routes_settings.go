package backoffice

// settingsRoutes are the lines of the route table for the settings and the per-card quota view (admin).
func (s *Service) settingsRoutes() []route {
	return nil
}
