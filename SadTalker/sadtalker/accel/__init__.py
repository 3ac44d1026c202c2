"""CPU speed paths for the plain networks in `nets/`, applied once after the weights load."""
