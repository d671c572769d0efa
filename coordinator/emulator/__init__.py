"""`blockfl emulate`: a whole federation as local processes, observed, verified and reported."""
