"""Physical constants, in one place (units in names)."""

C_KM_PER_S = 299_792.458
"""Vacuum light speed: laser ISLs and free-space ground links propagate at c."""

MU_EARTH_KM3_PER_S2 = 398_600.4418
"""Earth's gravitational parameter (WGS84/EGM96)."""

R_EARTH_KM = 6378.137
"""Equatorial radius (WGS84). Used for altitudes and line-of-sight tests (conservative: the
polar radius is 21 km smaller, so an ISL that clears this sphere clears the ellipsoid)."""

J2_EARTH = 1.08262668e-3
"""Second zonal harmonic, for the sun-synchronous inclination."""

SIDEREAL_YEAR_S = 365.256363004 * 86_400.0
"""Period of the mean Sun's apparent motion: a sun-synchronous orbit's node precesses once per it."""

DAY_S = 86_400.0

R_SUN_KM = 695_700.0
"""Nominal solar radius (IAU 2015 Resolution B3), for the Earth's umbra and penumbra."""
