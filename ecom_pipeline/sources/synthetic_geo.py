"""Geography for the synthetic source.  Brazil (the default profile): the 27 federative units (UF) and a few
real cities each, below; other countries (``US``): :func:`reference_profile` from the offline packages.

Coordinates are approximate (two decimals), populations are the 2022 census rounded to 0.01 million, and
the CEP (postal code) ranges follow the real first-digit allocation:

====  =====================================================================
0-1   SP (0xxxx Greater São Paulo, 1xxxx the interior and coast)
2     RJ (20000-28999), ES (29000-29999)
3     MG
4     BA (40000-48999), SE (49000-49999)
5     PE (50000-56999), AL (57xxx), PB (58xxx), RN (59xxx)
6     CE (60000-63999), PI (64xxx), MA (65xxx), PA (66000-68899), AP (689xx), AM (690-692, 694-698),
      RR (693xx), AC (699xx)
7     DF (70000-72799, 73000-73699), GO (72800-72999, 73700-76799), RO (768xx-769xx), TO (77xxx),
      MT (78000-78899), MS (79xxx)
8     PR (80000-87999), SC (88000-89999)
9     RS
====  =====================================================================

Each city carries a (real, approximate) 5-digit CEP range inside its state's range, its telephone area code
(DDD) and a weight inside its state; no two cities share a 3-digit CEP prefix.  The generator draws a city,
then a 3-digit CEP prefix (zip3) inside the city's range, whose centre is a fixed offset from the city
centre, then a point near that centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# code, name, region, population (millions), centroid lat, centroid lng
STATES: tuple[tuple[str, str, str, float, float, float], ...] = (
    ("AC", "Acre", "N", 0.83, -9.02, -70.51),
    ("AL", "Alagoas", "NE", 3.13, -9.57, -36.55),
    ("AP", "Amapá", "N", 0.73, 1.41, -51.77),
    ("AM", "Amazonas", "N", 3.94, -4.16, -64.65),
    ("BA", "Bahia", "NE", 14.14, -12.48, -41.70),
    ("CE", "Ceará", "NE", 8.79, -5.20, -39.53),
    ("DF", "Distrito Federal", "CO", 2.82, -15.80, -47.86),
    ("ES", "Espírito Santo", "SE", 3.83, -19.58, -40.67),
    ("GO", "Goiás", "CO", 7.06, -15.93, -49.86),
    ("MA", "Maranhão", "NE", 6.78, -5.04, -45.27),
    ("MT", "Mato Grosso", "CO", 3.66, -12.64, -55.91),
    ("MS", "Mato Grosso do Sul", "CO", 2.76, -20.51, -54.54),
    ("MG", "Minas Gerais", "SE", 20.54, -18.51, -44.56),
    ("PA", "Pará", "N", 8.12, -3.79, -52.48),
    ("PB", "Paraíba", "NE", 3.97, -7.12, -36.72),
    ("PR", "Paraná", "S", 11.44, -24.62, -51.61),
    ("PE", "Pernambuco", "NE", 9.06, -8.38, -37.86),
    ("PI", "Piauí", "NE", 3.27, -7.39, -42.60),
    ("RJ", "Rio de Janeiro", "SE", 16.05, -22.25, -42.66),
    ("RN", "Rio Grande do Norte", "NE", 3.30, -5.81, -36.59),
    ("RS", "Rio Grande do Sul", "S", 10.88, -29.78, -53.32),
    ("RO", "Rondônia", "N", 1.58, -10.94, -62.83),
    ("RR", "Roraima", "N", 0.64, 2.07, -61.40),
    ("SC", "Santa Catarina", "S", 7.61, -27.25, -50.49),
    ("SP", "São Paulo", "SE", 44.41, -22.19, -48.79),
    ("SE", "Sergipe", "NE", 2.21, -10.57, -37.45),
    ("TO", "Tocantins", "N", 1.51, -10.18, -48.33),
)

# Online shopping is concentrated in the South-East and South (Olist: SP alone ~42 % of customers).
ECOMMERCE_FACTOR: dict[str, float] = {"SE": 1.45, "S": 1.1, "CO": 0.95, "NE": 0.6, "N": 0.5}
STATE_ECOMMERCE_OVERRIDE: dict[str, float] = {"SP": 2.1, "DF": 1.35}

# Share of sellers per state (marketplace sellers cluster in São Paulo); unlisted states get 0.002.
SELLER_STATE_SHARE: dict[str, float] = {
    "SP": 0.60,
    "PR": 0.09,
    "MG": 0.08,
    "RJ": 0.05,
    "SC": 0.045,
    "RS": 0.045,
    "GO": 0.012,
    "DF": 0.01,
    "ES": 0.01,
    "BA": 0.01,
    "PE": 0.008,
    "CE": 0.005,
    "MS": 0.004,
    "MT": 0.004,
}

# state, city, lat, lng, cep_lo, cep_hi, ddd, weight inside the state
CITIES: tuple[tuple[str, str, float, float, int, int, int, float], ...] = (
    # South-East
    ("SP", "São Paulo", -23.55, -46.63, 1000, 5899, 11, 0.44),
    ("SP", "Guarulhos", -23.46, -46.53, 7000, 7399, 11, 0.05),
    ("SP", "Osasco", -23.53, -46.79, 6000, 6299, 11, 0.04),
    ("SP", "Santo André", -23.66, -46.53, 9000, 9299, 11, 0.04),
    ("SP", "São Bernardo do Campo", -23.69, -46.56, 9600, 9899, 11, 0.045),
    ("SP", "Campinas", -22.91, -47.06, 13000, 13139, 19, 0.08),
    ("SP", "Santos", -23.96, -46.33, 11000, 11099, 13, 0.04),
    ("SP", "São José dos Campos", -23.18, -45.88, 12200, 12248, 12, 0.04),
    ("SP", "Sorocaba", -23.50, -47.46, 18000, 18109, 15, 0.04),
    ("SP", "Ribeirão Preto", -21.18, -47.81, 14000, 14114, 16, 0.04),
    ("SP", "Jundiaí", -23.19, -46.88, 13200, 13219, 11, 0.03),
    ("SP", "Piracicaba", -22.73, -47.65, 13400, 13427, 19, 0.03),
    ("SP", "Bauru", -22.31, -49.06, 17000, 17109, 14, 0.03),
    ("SP", "São José do Rio Preto", -20.81, -49.38, 15000, 15099, 17, 0.03),
    ("RJ", "Rio de Janeiro", -22.91, -43.17, 20000, 23799, 21, 0.58),
    ("RJ", "Niterói", -22.88, -43.10, 24000, 24399, 21, 0.10),
    ("RJ", "Duque de Caxias", -22.79, -43.31, 25000, 25299, 21, 0.07),
    ("RJ", "Nova Iguaçu", -22.76, -43.45, 26000, 26099, 21, 0.07),
    ("RJ", "Petrópolis", -22.51, -43.18, 25600, 25779, 24, 0.06),
    ("RJ", "Volta Redonda", -22.52, -44.10, 27200, 27299, 24, 0.06),
    ("RJ", "Campos dos Goytacazes", -21.75, -41.32, 28000, 28099, 22, 0.06),
    ("MG", "Belo Horizonte", -19.92, -43.94, 30000, 31999, 31, 0.40),
    ("MG", "Contagem", -19.93, -44.05, 32000, 32399, 31, 0.08),
    ("MG", "Betim", -19.97, -44.20, 32600, 32699, 31, 0.06),
    ("MG", "Uberlândia", -18.92, -48.28, 38400, 38415, 34, 0.12),
    ("MG", "Uberaba", -19.75, -47.93, 38000, 38099, 34, 0.06),
    ("MG", "Juiz de Fora", -21.76, -43.35, 36000, 36099, 32, 0.10),
    ("MG", "Montes Claros", -16.73, -43.86, 39400, 39409, 38, 0.07),
    ("MG", "Ipatinga", -19.47, -42.54, 35160, 35164, 31, 0.05),
    ("MG", "Governador Valadares", -18.85, -41.95, 35000, 35099, 33, 0.06),
    ("ES", "Vitória", -20.32, -40.34, 29000, 29099, 27, 0.35),
    ("ES", "Vila Velha", -20.33, -40.29, 29100, 29129, 27, 0.30),
    ("ES", "Guarapari", -20.67, -40.50, 29200, 29229, 27, 0.20),
    ("ES", "Cachoeiro de Itapemirim", -20.85, -41.11, 29300, 29318, 28, 0.15),
    # South
    ("PR", "Curitiba", -25.43, -49.27, 80000, 82999, 41, 0.45),
    ("PR", "Londrina", -23.31, -51.16, 86000, 86099, 43, 0.15),
    ("PR", "Maringá", -23.42, -51.94, 87000, 87099, 44, 0.13),
    ("PR", "Ponta Grossa", -25.09, -50.16, 84000, 84099, 42, 0.09),
    ("PR", "Guarapuava", -25.39, -51.46, 85000, 85109, 42, 0.09),
    ("PR", "Foz do Iguaçu", -25.55, -54.59, 85850, 85869, 45, 0.09),
    ("SC", "Florianópolis", -27.60, -48.55, 88000, 88099, 48, 0.30),
    ("SC", "Joinville", -26.30, -48.85, 89200, 89239, 47, 0.25),
    ("SC", "Blumenau", -26.92, -49.07, 89000, 89099, 47, 0.20),
    ("SC", "Chapecó", -27.10, -52.62, 89800, 89816, 49, 0.15),
    ("SC", "Criciúma", -28.68, -49.37, 88800, 88819, 48, 0.10),
    ("RS", "Porto Alegre", -30.03, -51.23, 90000, 91999, 51, 0.50),
    ("RS", "Canoas", -29.92, -51.18, 92000, 92479, 51, 0.10),
    ("RS", "Caxias do Sul", -29.17, -51.18, 95000, 95124, 54, 0.15),
    ("RS", "Pelotas", -31.77, -52.34, 96000, 96099, 53, 0.10),
    ("RS", "Santa Maria", -29.68, -53.81, 97000, 97119, 55, 0.08),
    ("RS", "Passo Fundo", -28.26, -52.41, 99000, 99099, 54, 0.07),
    # North-East
    ("BA", "Salvador", -12.97, -38.50, 40000, 42599, 71, 0.55),
    ("BA", "Feira de Santana", -12.27, -38.97, 44000, 44099, 75, 0.15),
    ("BA", "Vitória da Conquista", -14.86, -40.84, 45000, 45099, 77, 0.12),
    ("BA", "Ilhéus", -14.79, -39.05, 45650, 45668, 73, 0.08),
    ("BA", "Juazeiro", -9.41, -40.50, 48900, 48909, 74, 0.10),
    ("SE", "Aracaju", -10.91, -37.07, 49000, 49099, 79, 0.70),
    ("SE", "Itabaiana", -10.68, -37.43, 49500, 49509, 79, 0.30),
    ("PE", "Recife", -8.05, -34.88, 50000, 52999, 81, 0.50),
    ("PE", "Olinda", -8.01, -34.85, 53000, 53299, 81, 0.12),
    ("PE", "Jaboatão dos Guararapes", -8.11, -35.01, 54000, 54499, 81, 0.15),
    ("PE", "Caruaru", -8.28, -35.98, 55000, 55099, 81, 0.13),
    ("PE", "Petrolina", -9.39, -40.50, 56300, 56339, 87, 0.10),
    ("AL", "Maceió", -9.67, -35.74, 57000, 57099, 82, 0.75),
    ("AL", "Arapiraca", -9.75, -36.66, 57300, 57319, 82, 0.25),
    ("PB", "João Pessoa", -7.12, -34.86, 58000, 58099, 83, 0.60),
    ("PB", "Campina Grande", -7.23, -35.88, 58400, 58499, 83, 0.40),
    ("RN", "Natal", -5.79, -35.21, 59000, 59161, 84, 0.70),
    ("RN", "Mossoró", -5.19, -37.34, 59600, 59649, 84, 0.30),
    ("CE", "Fortaleza", -3.73, -38.53, 60000, 61599, 85, 0.75),
    ("CE", "Sobral", -3.69, -40.35, 62000, 62119, 88, 0.12),
    ("CE", "Juazeiro do Norte", -7.21, -39.32, 63000, 63059, 88, 0.13),
    ("PI", "Teresina", -5.09, -42.80, 64000, 64099, 86, 0.80),
    ("PI", "Parnaíba", -2.90, -41.78, 64200, 64219, 86, 0.20),
    ("MA", "São Luís", -2.53, -44.30, 65000, 65109, 98, 0.70),
    ("MA", "Imperatriz", -5.53, -47.49, 65900, 65919, 99, 0.30),
    # North
    ("PA", "Belém", -1.46, -48.50, 66000, 66999, 91, 0.65),
    ("PA", "Ananindeua", -1.37, -48.37, 67000, 67199, 91, 0.20),
    ("PA", "Santarém", -2.44, -54.71, 68000, 68109, 93, 0.15),
    ("AP", "Macapá", 0.03, -51.07, 68900, 68914, 96, 1.0),
    ("AM", "Manaus", -3.12, -60.02, 69000, 69099, 92, 1.0),
    ("RR", "Boa Vista", 2.82, -60.67, 69300, 69339, 95, 1.0),
    ("AC", "Rio Branco", -9.97, -67.81, 69900, 69923, 68, 1.0),
    ("RO", "Porto Velho", -8.76, -63.90, 76800, 76849, 69, 0.70),
    ("RO", "Ji-Paraná", -10.88, -61.95, 76900, 76914, 69, 0.30),
    ("TO", "Palmas", -10.18, -48.33, 77000, 77270, 63, 0.60),
    ("TO", "Araguaína", -7.19, -48.21, 77800, 77834, 63, 0.40),
    # Centre-West
    ("DF", "Brasília", -15.79, -47.88, 70000, 72799, 61, 1.0),
    ("GO", "Goiânia", -16.68, -49.25, 74000, 74899, 62, 0.55),
    ("GO", "Aparecida de Goiânia", -16.82, -49.24, 74900, 74999, 62, 0.20),
    ("GO", "Anápolis", -16.33, -48.95, 75000, 75149, 62, 0.15),
    ("GO", "Rio Verde", -17.80, -50.93, 75900, 75909, 64, 0.10),
    ("MT", "Cuiabá", -15.60, -56.10, 78000, 78109, 65, 0.60),
    ("MT", "Sinop", -11.86, -55.50, 78550, 78559, 66, 0.20),
    ("MT", "Rondonópolis", -16.47, -54.64, 78700, 78739, 66, 0.20),
    ("MS", "Campo Grande", -20.44, -54.65, 79000, 79124, 67, 0.70),
    ("MS", "Dourados", -22.22, -54.81, 79800, 79849, 67, 0.30),
)

# First-digit CEP ranges per state (inclusive 5-digit bounds), used by tests and for documentation.
STATE_CEP_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "SP": ((1000, 19999),),
    "RJ": ((20000, 28999),),
    "ES": ((29000, 29999),),
    "MG": ((30000, 39999),),
    "BA": ((40000, 48999),),
    "SE": ((49000, 49999),),
    "PE": ((50000, 56999),),
    "AL": ((57000, 57999),),
    "PB": ((58000, 58999),),
    "RN": ((59000, 59999),),
    "CE": ((60000, 63999),),
    "PI": ((64000, 64999),),
    "MA": ((65000, 65999),),
    "PA": ((66000, 68899),),
    "AP": ((68900, 68999),),
    "AM": ((69000, 69299), (69400, 69899)),
    "RR": ((69300, 69399),),
    "AC": ((69900, 69999),),
    "DF": ((70000, 72799), (73000, 73699)),
    "GO": ((72800, 72999), (73700, 76799)),
    "RO": ((76800, 76999),),
    "TO": ((77000, 77999),),
    "MT": ((78000, 78899),),
    "MS": ((79000, 79999),),
    "PR": ((80000, 87999),),
    "SC": ((88000, 89999),),
    "RS": ((90000, 99999),),
}


# ---------------------------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class CountryProfile:
    """Geography of one synthetic shop: the tuples above for Brazil, or built from the offline reference
    packages (:mod:`ecom_pipeline.geography`) for another country."""

    country: str
    states: tuple[tuple[str, str, str, float, float, float], ...]
    cities: tuple[tuple[str, str, float, float, int, int, int, float], ...]
    ecommerce_factor: dict[str, float]
    state_override: dict[str, float]
    seller_state_share: dict[str, float]
    phone_prefix: str
    english_share: float  # share of customers with English (vs Portuguese) names
    geo_bounds: str  # ParseHints.geo_bounds for staging's coordinate check


BR_PROFILE = CountryProfile(
    "BR",
    STATES,
    CITIES,
    ECOMMERCE_FACTOR,
    STATE_ECOMMERCE_OVERRIDE,
    SELLER_STATE_SHARE,
    "+55",
    0.08,
    "brazil",
)
# US marketplace sellers cluster in the large coastal states (assumed shares; other states 0.002).
US_SELLER_STATE_SHARE = {
    "CA": 0.22,
    "NY": 0.14,
    "TX": 0.1,
    "FL": 0.08,
    "WA": 0.06,
    "IL": 0.06,
    "NJ": 0.05,
    "GA": 0.04,
    "MA": 0.04,
    "PA": 0.04,
}
SUPPORTED_PROFILES = ("BR", "US")


def reference_profile(
    country: str, seller_state_share: dict[str, float] | None = None, cities_per_state: int = 3
) -> CountryProfile:
    """A profile from the offline reference data: the country's real first-level divisions and their
    centroids (GeoNames places >= 1,000 inhabitants, via :mod:`ecom_pipeline.geography`).  A division's weight
    is its number of such places (a population proxy, the reference data has no populations); its cities are
    ``cities_per_state`` real places spread south to north.  Postal codes are synthetic: each city gets its
    own block of three 3-digit prefixes (10000 + 300 * city index ...), so prefixes never cross a city."""
    from ecom_pipeline.geography import divisions, places

    divs = divisions(country).sort_values("code").reset_index(drop=True)
    p = places()
    p = p[p["cc"] == country]
    states, cities = [], []
    for d in divs.itertuples(index=False):
        states.append(
            (
                str(d.code),
                str(d.name),
                country,
                float(d.places) / 1000.0,
                round(float(d.lat), 4),
                round(float(d.lng), 4),
            )
        )
        inside = p[p["admin1"] == d.name].sort_values(["lat", "name"]).reset_index(drop=True)
        picks = sorted({round(q * (len(inside) - 1)) for q in np.linspace(0.15, 0.85, cities_per_state)})
        weights = np.linspace(1.0, 0.5, len(picks))
        for k, i in enumerate(picks):
            c = len(cities)
            lo = 10000 + 300 * c
            cities.append(
                (
                    str(d.code),
                    str(inside.at[i, "name"]),
                    round(float(inside.at[i, "lat"]), 4),
                    round(float(inside.at[i, "lng"]), 4),
                    lo,
                    lo + 299,
                    200 + c % 800,
                    float(weights[k] / weights.sum()),
                )
            )
    if 10000 + 300 * len(cities) > 100000:
        raise ValueError(f"{country}: too many cities for the synthetic 5-digit postal codes")
    return CountryProfile(
        country,
        tuple(states),
        tuple(cities),
        {country: 1.0},
        {},
        seller_state_share if seller_state_share is not None else {},
        "+1",
        1.0,
        "world",
    )


def profile(country: str) -> CountryProfile:
    """The synthetic source's geography for ``country`` (ECOM_SYNTHETIC_COUNTRY)."""
    country = country.upper()
    if country == "BR":
        return BR_PROFILE
    if country == "US":
        return reference_profile("US", US_SELLER_STATE_SHARE)
    raise ValueError(
        f"no synthetic country profile {country!r}; choose one of {', '.join(SUPPORTED_PROFILES)}"
    )
