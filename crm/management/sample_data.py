"""Pools that the demo and bulk seed commands draw from.

Both commands need the same vocabulary (the product catalog, the touchpoint
systems, names, places and what a contact on each channel looks like), so it
lives here once. Every string is plain text without tabs, newlines, backslashes
or double quotes: ``seed_bulk`` writes them into COPY text and SQL literals
without escaping, and ``check_pools`` (run by both commands) proves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crm.models import SourceSystem

DEMO_PASSWORD = "demo-password-1"  # the documented demo log-in, printed by make demo

# --- Catalog and touchpoint systems --------------------------------------------------


@dataclass(frozen=True)
class ProductSpec:
    code: str
    name: str
    category: str
    description: str
    prefix: str  # account numbers of this product start with it
    balance: tuple[int, int]  # typical balance range in dollars; negative means owed


PRODUCTS: tuple[ProductSpec, ...] = (
    ProductSpec("everyday-checking", "Everyday Checking", "checking",
                "No monthly fee with direct deposit; debit card and mobile deposit.", "CHK", (150, 12_000)),
    ProductSpec("premier-checking", "Premier Checking", "checking",
                "Interest-bearing checking with ATM fee refunds for balances over $25,000.", "PCK",
                (5_000, 90_000)),
    ProductSpec("business-checking", "Business Checking", "checking",
                "Checking for small businesses: 500 free transactions a month.", "BCK", (2_000, 250_000)),
    ProductSpec("high-yield-savings", "High-Yield Savings", "savings",
                "Savings with a tiered APY and no minimum balance.", "SAV", (300, 80_000)),
    ProductSpec("cash-back-card", "Cash Back Visa", "card",
                "1.5% cash back on every purchase, no annual fee.", "CCB", (-6_000, 0)),
    ProductSpec("travel-rewards-card", "Travel Rewards Visa Signature", "card",
                "3x points on travel and dining; no foreign transaction fees.", "CTR", (-12_000, 0)),
    ProductSpec("mortgage-30-fixed", "30-Year Fixed Mortgage", "mortgage",
                "Fixed-rate home loan with a 30-year term.", "MTG", (-650_000, -90_000)),
    ProductSpec("auto-loan", "Auto Loan", "loan",
                "New and used vehicle financing, terms up to 72 months.", "AUT", (-45_000, -3_000)),
    ProductSpec("personal-loan", "Personal Loan", "loan",
                "Unsecured fixed-rate loan from $2,000 to $40,000.", "PLN", (-30_000, -1_000)),
    ProductSpec("managed-portfolio", "Managed Investment Portfolio", "investment",
                "Diversified portfolio managed by an advisor.", "INV", (5_000, 600_000)),
    ProductSpec("term-life-20", "20-Year Term Life Insurance", "insurance",
                "Level premium term life cover.", "LIF", (0, 0)),
    ProductSpec("homeowners-insurance", "Homeowners Insurance", "insurance",
                "Dwelling, contents and liability cover.", "HOM", (0, 0)),
)  # fmt: skip
PRODUCTS_BY_CODE = {p.code: p for p in PRODUCTS}

# (code, name, kind): the touchpoint systems that send results in.
SOURCE_SYSTEMS: tuple[tuple[str, str, str], ...] = (
    ("web", "Web site and online banking", "web"),
    ("email", "E-mail platform", "email"),
    ("ivr", "IVR", "ivr"),
    ("dialer", "Outbound dialer", "dialer"),
    ("direct_mail", "Direct mail house", "direct_mail"),
    ("pos", "Branch and point of sale", "pos"),
    ("billing", "Billing", "billing"),
)

# --- Places ------------------------------------------------------------------------------


@dataclass(frozen=True)
class City:
    name: str
    region: str
    zip_prefix: str  # first three ZIP digits
    area_code: str
    time_zone: str


CITIES: tuple[City, ...] = (
    City("New York", "NY", "100", "212", "America/New_York"),
    City("Brooklyn", "NY", "112", "718", "America/New_York"),
    City("Boston", "MA", "021", "617", "America/New_York"),
    City("Philadelphia", "PA", "191", "215", "America/New_York"),
    City("Washington", "DC", "200", "202", "America/New_York"),
    City("Baltimore", "MD", "212", "410", "America/New_York"),
    City("Atlanta", "GA", "303", "404", "America/New_York"),
    City("Miami", "FL", "331", "305", "America/New_York"),
    City("Orlando", "FL", "328", "407", "America/New_York"),
    City("Charlotte", "NC", "282", "704", "America/New_York"),
    City("Detroit", "MI", "482", "313", "America/Detroit"),
    City("Columbus", "OH", "432", "614", "America/New_York"),
    City("Chicago", "IL", "606", "312", "America/Chicago"),
    City("Minneapolis", "MN", "554", "612", "America/Chicago"),
    City("St. Louis", "MO", "631", "314", "America/Chicago"),
    City("Dallas", "TX", "752", "214", "America/Chicago"),
    City("Houston", "TX", "770", "713", "America/Chicago"),
    City("San Antonio", "TX", "782", "210", "America/Chicago"),
    City("Austin", "TX", "787", "512", "America/Chicago"),
    City("Nashville", "TN", "372", "615", "America/Chicago"),
    City("New Orleans", "LA", "701", "504", "America/Chicago"),
    City("Denver", "CO", "802", "303", "America/Denver"),
    City("Salt Lake City", "UT", "841", "801", "America/Denver"),
    City("Albuquerque", "NM", "871", "505", "America/Denver"),
    City("Phoenix", "AZ", "850", "602", "America/Phoenix"),
    City("Tucson", "AZ", "857", "520", "America/Phoenix"),
    City("Los Angeles", "CA", "900", "213", "America/Los_Angeles"),
    City("San Diego", "CA", "921", "619", "America/Los_Angeles"),
    City("San Francisco", "CA", "941", "415", "America/Los_Angeles"),
    City("San Jose", "CA", "951", "408", "America/Los_Angeles"),
    City("Sacramento", "CA", "958", "916", "America/Los_Angeles"),
    City("Seattle", "WA", "981", "206", "America/Los_Angeles"),
    City("Portland", "OR", "972", "503", "America/Los_Angeles"),
    City("Las Vegas", "NV", "891", "702", "America/Los_Angeles"),
    City("Anchorage", "AK", "995", "907", "America/Anchorage"),
    City("Honolulu", "HI", "968", "808", "Pacific/Honolulu"),
)

STREETS: tuple[str, ...] = (
    "Main", "Oak", "Maple", "Cedar", "Elm", "Pine", "Washington", "Lake", "Hill", "Park",
    "Sunset", "Lincoln", "Jackson", "Highland", "River", "Walnut", "Chestnut", "Spring", "Willow",
    "Franklin", "Madison", "Jefferson", "Church", "Mill", "Forest", "Meadow", "Ridge", "Orchard",
    "Magnolia", "Dogwood", "Harbor", "Mesa", "Sierra Vista", "Bayview", "Prospect", "Grand",
)  # fmt: skip
STREET_KINDS: tuple[str, ...] = ("St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Way", "Pl")

# --- Names -------------------------------------------------------------------------------
# Grouped by origin so that a household's members have names that belong together.


@dataclass(frozen=True)
class NamePool:
    language: str  # most customers with these names are served in English; some in this language
    female: tuple[str, ...]
    male: tuple[str, ...]
    family: tuple[str, ...]


NAME_POOLS: tuple[NamePool, ...] = (
    NamePool(
        "en",
        ("Emily", "Sarah", "Jessica", "Ashley", "Megan", "Rachel", "Lauren", "Hannah", "Olivia",
         "Katherine", "Elizabeth", "Abigail", "Madison", "Claire", "Grace", "Molly"),
        ("James", "Michael", "Robert", "David", "William", "Matthew", "Andrew", "Ryan", "Tyler",
         "Christopher", "Daniel", "Benjamin", "Ethan", "Connor", "Patrick", "Thomas"),
        ("Smith", "Johnson", "Miller", "Davis", "Wilson", "Anderson", "Taylor", "Thompson", "Moore",
         "Clark", "Walker", "Hall", "Allen", "Young", "King", "Wright", "Scott", "Baker", "Murphy",
         "O'Brien", "Sullivan", "Kelly", "Campbell", "Stewart", "Morris", "Cooper", "Reed", "Bennett"),
    ),
    NamePool(
        "es",
        ("María", "Sofía", "Valentina", "Camila", "Lucía", "Isabel", "Gabriela", "Ana", "Daniela",
         "Ximena", "Carmen", "Rosa", "Guadalupe", "Paola"),
        ("José", "Luis", "Carlos", "Juan", "Miguel", "Jorge", "Alejandro", "Diego", "Javier",
         "Andrés", "Mateo", "Santiago", "Ramón", "Héctor"),
        ("García", "Rodríguez", "Martínez", "Hernández", "López", "González", "Pérez", "Sánchez",
         "Ramírez", "Torres", "Flores", "Rivera", "Gómez", "Díaz", "Cruz", "Morales", "Reyes",
         "Núñez", "Castillo", "Jiménez", "Vargas", "Mendoza"),
    ),
    NamePool(
        "en",
        ("Aaliyah", "Imani", "Jasmine", "Ebony", "Keisha", "Tiana", "Destiny", "Monique", "Aisha",
         "Nia", "Shanice", "Latoya"),
        ("Darnell", "Jamal", "Malik", "Terrence", "DeShawn", "Marcus", "Andre", "Tyrone", "Jerome",
         "Darius", "Xavier", "Cedric"),
        ("Washington", "Jefferson", "Banks", "Brooks", "Coleman", "Freeman", "Jenkins", "Robinson",
         "Harris", "Jackson", "Booker", "Dixon", "Gaines", "Mayfield"),
    ),
    NamePool(
        "zh",
        ("Mei", "Li Na", "Xiu Ying", "Wen", "Jing", "Yan", "Hui", "Lan"),
        ("Wei", "Jun", "Hao", "Ming", "Jian", "Lei", "Tao", "Qiang"),
        ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Lin", "Xu"),
    ),
    NamePool(
        "vi",
        ("Linh", "Thao", "Trang", "Huong", "Ngoc", "Phuong", "Anh"),
        ("Minh", "Duc", "Tuan", "Quang", "Hieu", "Khoa", "Bao"),
        ("Nguyen", "Tran", "Le", "Pham", "Hoang", "Vu", "Dang", "Bui", "Do"),
    ),
    NamePool(
        "en",
        ("Priya", "Ananya", "Divya", "Kavya", "Lakshmi", "Neha", "Pooja", "Shreya"),
        ("Arjun", "Rahul", "Vikram", "Rohan", "Sanjay", "Amit", "Karthik", "Nikhil"),
        ("Patel", "Sharma", "Singh", "Gupta", "Reddy", "Iyer", "Raman", "Nair", "Desai", "Mehta"),
    ),
    NamePool(
        "ko",
        ("Ji-woo", "Seo-yeon", "Min-ji", "Hye-jin", "Soo-ah"),
        ("Min-jun", "Ji-ho", "Hyun-woo", "Sung-min", "Dong-hyun"),
        ("Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon"),
    ),
    NamePool(
        "en",
        ("Chiamaka", "Ngozi", "Adaeze", "Folake", "Amara", "Zainab", "Fatima", "Leila", "Yasmin",
         "Noor"),
        ("Chinedu", "Emeka", "Oluwaseun", "Kwame", "Kofi", "Omar", "Ahmed", "Karim", "Tariq",
         "Yusuf"),
        ("Okafor", "Adeyemi", "Okonkwo", "Mensah", "Boateng", "Haddad", "Khalil", "Nasser", "Rahman",
         "Hassan", "Farouk"),
    ),
    NamePool(
        "en",
        ("Anna", "Sophia", "Chiara", "Giulia", "Katarzyna", "Agnieszka", "Ingrid", "Astrid", "Zoë",
         "Amélie", "Françoise", "Siobhan", "Niamh", "Greta"),
        ("Marco", "Luca", "Giovanni", "Piotr", "Tomasz", "Lars", "Sven", "Henrik", "François",
         "Étienne", "Seamus", "Dmitri", "Nikolai", "Stefan"),
        ("Rossi", "Russo", "Romano", "Kowalski", "Nowak", "Wiśniewski", "Johansson", "Lindqvist",
         "Schmidt", "Müller", "Becker", "Dubois", "Lefèvre", "Ivanov", "Petrov", "Fitzgerald",
         "Gallagher", "Novak"),
    ),
)  # fmt: skip

# (organization name, web domain label): the demo's business customers.
BUSINESSES: tuple[tuple[str, str], ...] = (
    ("Northwind Plumbing & Heating LLC", "northwindplumbing"),
    ("Blue Mesa Coffee Roasters", "bluemesacoffee"),
    ("Castillo Family Dental", "castillodental"),
    ("Harborview Marine Supply", "harborviewmarine"),
    ("Okafor & Mensah CPAs", "okafor-mensah"),
    ("Green Valley Landscaping Inc.", "greenvalleyland"),
    ("Pham's Pho House", "phamspho"),
    ("Summit Ridge Veterinary Clinic", "summitridgevet"),
    ("Keystone Auto Body", "keystoneautobody"),
    ("Lakeshore Yoga Studio", "lakeshoreyoga"),
    ("Redwood Builders Group", "redwoodbuilders"),
    ("Bright Path Tutoring", "brightpathtutor"),
    ("Gallagher Brothers Roofing", "gallagherroofing"),
    ("Sakura Sushi & Grill", "sakurasushigrill"),
    ("Prairie Wind Logistics", "prairiewindlog"),
)
BUSINESS_WORDS: tuple[str, ...] = (
    "Plumbing", "Dental", "Bakery", "Auto Repair", "Landscaping", "Consulting", "Roofing",
    "Catering", "Logistics", "Hardware", "Florist", "Printing", "Cleaning Services", "Electric",
)  # fmt: skip
BUSINESS_SUFFIXES: tuple[str, ...] = ("LLC", "Inc.", "Co.", "Group", "& Sons")

EMAIL_DOMAINS: tuple[str, ...] = ("example.com", "example.net", "example.org", "mail.example.com")

# --- What a contact on each channel looks like --------------------------------------------


@dataclass(frozen=True)
class ContactKind:
    """One kind of contact with its channel, direction, source and a note that
    agrees with its disposition.

    ``agent``: handled by an agent (phone and chat). ``marketing``: a campaign
    contact, sent only to customers who opted in (and, on phone or e-mail, did
    not ask to be left alone). ``weight``: how often it happens relative to the others.
    """

    channel: str
    direction: str
    source: str
    subject: str
    notes: str
    disposition: str
    duration: tuple[int, int] | None
    weight: int
    agent: bool = False
    marketing: bool = False
    campaign: str = ""
    follow_up: bool = False  # the agent promised to call back


CONTACT_KINDS: tuple[ContactKind, ...] = (
    # IVR: inbound, self-service or transferred.
    ContactKind("ivr", "inbound", "ivr", "Balance inquiry",
                "Caller authenticated with PIN and heard the checking balance and last five transactions.",
                "self_served", (45, 180), 6),
    ContactKind("ivr", "inbound", "ivr", "Card activation",
                "New debit card activated in the IVR after the identity check; PIN set.",
                "self_served", (60, 200), 2),
    ContactKind("ivr", "inbound", "ivr", "Payment due date",
                "Caller asked for the card payment due date, repeated the menu twice, "
                "then asked for an agent.",
                "transferred", (70, 240), 3),
    ContactKind("ivr", "inbound", "ivr", "Lost or stolen card",
                "Caller reported a lost card; card blocked in the IVR and call transferred to card services.",
                "transferred", (90, 260), 1),
    ContactKind("ivr", "inbound", "ivr", "Abandoned at main menu",
                "Caller hung up at the main menu after 40 seconds.", "abandoned", (10, 45), 2),
    # Inbound calls handled by an agent (recorded on the CRM screen).
    ContactKind("phone", "inbound", "crm", "Card transaction dispute",
                "Disputes an $84.20 online charge. Opened a dispute, explained the provisional credit; "
                "letter to follow within 10 days.", "resolved", (240, 780), 2, agent=True),
    ContactKind("phone", "inbound", "crm", "Refinancing question",
                "Asked about refinancing. Quoted today's 30-year fixed rate and e-mailed the rate sheet; "
                "wants a call back next week after talking to spouse.", "follow_up", (300, 900), 2,
                agent=True, follow_up=True),
    ContactKind("phone", "inbound", "crm", "Change of address",
                "Moving next month. Verified identity (date of birth, last four of SSN) and updated the "
                "mailing address from the 1st.", "resolved", (180, 420), 1, agent=True),
    ContactKind("phone", "inbound", "crm", "Overdraft fee reversal",
                "Asked to waive a $35 overdraft fee. Reversed once as a courtesy; set up a low-balance "
                "alert with the customer.", "resolved", (200, 540), 2, agent=True),
    ContactKind("phone", "inbound", "crm", "Locked out of online banking",
                "Reset the online banking password after identity verification; customer signed in "
                "while on the call.", "resolved", (150, 480), 2, agent=True),
    ContactKind("phone", "inbound", "crm", "Complaint: branch wait time",
                "Unhappy about a 40-minute wait at the branch on Saturday. Apologised and logged the "
                "complaint for the branch manager, who will call within 2 business days.", "escalated",
                (240, 720), 1, agent=True, follow_up=True),
    ContactKind("phone", "inbound", "crm", "Travel notice",
                "Added a travel notice on both cards for a two-week trip to Mexico.", "resolved",
                (120, 300), 1, agent=True),
    ContactKind("phone", "inbound", "crm", "Wire transfer status",
                "Asked about yesterday's outgoing wire; confirmed it was released this morning and gave "
                "the reference number.", "resolved", (150, 360), 1, agent=True),
    # Outbound calls from the dialer.
    ContactKind("phone", "outbound", "dialer", "Travel rewards card offer", "No answer after six rings.",
                "no_answer", (20, 40), 3, agent=True, marketing=True, campaign="CARD-TRAVEL-Q2"),
    ContactKind("phone", "outbound", "dialer", "Travel rewards card offer",
                "Left a voicemail with the offer summary and the direct callback number.", "voicemail",
                (40, 90), 2, agent=True, marketing=True, campaign="CARD-TRAVEL-Q2"),
    ContactKind("phone", "outbound", "dialer", "Travel rewards card offer",
                "Interested: started the application on the call; pending income verification.",
                "interested", (420, 900), 1, agent=True, marketing=True, campaign="CARD-TRAVEL-Q2"),
    ContactKind("phone", "outbound", "dialer", "Travel rewards card offer",
                "Not interested, already has a travel card elsewhere; asked for no more card offers "
                "this year.", "not_interested", (60, 180), 1, agent=True, marketing=True,
                campaign="CARD-TRAVEL-Q2"),
    ContactKind("phone", "outbound", "dialer", "Savings rate promotion",
                "Explained the 4.10% promotional APY on new deposits; will move funds from another bank "
                "this week. Call back Friday to confirm.", "callback_requested", (240, 600), 1,
                agent=True, marketing=True, campaign="SAVINGS-PROMO", follow_up=True),
    ContactKind("phone", "outbound", "dialer", "Past-due payment reminder",
                "Card payment five days past due; promised to pay $250 on Friday by phone transfer.",
                "promise_to_pay", (120, 360), 1, agent=True),
    ContactKind("phone", "outbound", "dialer", "Welcome call",
                "Welcome call after account opening: walked through the mobile app and "
                "direct deposit set-up.",
                "completed", (300, 720), 1, agent=True),
    # E-mail.
    ContactKind("email", "outbound", "billing", "Your monthly statement is ready",
                "Statement notification delivered.", "delivered", None, 8),
    ContactKind("email", "outbound", "email", "Spring savings event",
                "Campaign e-mail opened on mobile; clicked through to the savings rates page.", "clicked",
                None, 2, marketing=True, campaign="EM-SPRING-SAVE"),
    ContactKind("email", "outbound", "email", "Spring savings event",
                "Campaign e-mail delivered, not opened.", "delivered", None, 3, marketing=True,
                campaign="EM-SPRING-SAVE"),
    ContactKind("email", "outbound", "email", "Mortgage rate watch", "Bounced: recipient mailbox full.",
                "bounced", None, 1, marketing=True, campaign="EM-RATE-WATCH"),
    ContactKind("email", "outbound", "email", "Security alert: new device sign-in",
                "Security notice sent after a sign-in from a new device.", "delivered", None, 2),
    ContactKind("email", "inbound", "email", "Question about wire fees",
                "Asked what an international wire costs; answered with the fee schedule.", "answered",
                None, 1),
    ContactKind("email", "inbound", "email", "Request for tax documents",
                "Asked for last year's 1099-INT; replied with the download link in online banking.",
                "answered", None, 1),
    # SMS.
    ContactKind("sms", "outbound", "billing", "Payment due reminder",
                "Text reminder: card payment of $120.00 due in 3 days.", "delivered", None, 4),
    ContactKind("sms", "outbound", "dialer", "Fraud alert",
                "Text alert about a $412.77 purchase; customer replied YES to confirm it was theirs.",
                "confirmed", None, 1),
    # Web and chat.
    ContactKind("web", "inbound", "web", "Signed in to online banking",
                "Viewed balances and recent transactions.", "visit", (60, 600), 10),
    ContactKind("web", "inbound", "web", "Viewed mortgage rates",
                "Browsed 30-year fixed rates and used the payment calculator for 12 minutes.", "visit",
                (300, 900), 2),
    ContactKind("web", "inbound", "web", "Updated contact preferences", "Turned on paperless statements.",
                "self_served", (60, 240), 1),
    ContactKind("web", "inbound", "web", "Started card application",
                "Left the travel card application at the income step.", "abandoned", (120, 600), 1),
    ContactKind("chat", "inbound", "web", "Chat: ordering checks",
                "Explained how to order checks in the mobile app.", "resolved", (180, 480), 2, agent=True),
    ContactKind("chat", "inbound", "web", "Chat: pending mobile deposit",
                "Mobile check deposit of $1,250.00 is on hold for review; explained the hold and when the "
                "funds will be released.", "resolved", (240, 600), 1, agent=True),
    # Direct mail.
    ContactKind("mail", "outbound", "direct_mail", "Pre-approved travel card mailer",
                "Mailer sent with offer code TRV-24; response window 60 days.", "mailed", None, 2,
                marketing=True, campaign="DM-TRAVEL-CARD"),
    ContactKind("mail", "outbound", "direct_mail", "Home equity line of credit brochure",
                "Brochure mailed to homeowners segment.", "mailed", None, 1, marketing=True,
                campaign="DM-HELOC"),
    ContactKind("mail", "outbound", "direct_mail", "Annual privacy notice", "Annual privacy notice mailed.",
                "mailed", None, 1),
    # Branch and point of sale.
    ContactKind("branch", "inbound", "pos", "Cash deposit at teller",
                "Deposited $640.00 in cash into checking at the teller window.", "completed", (180, 480), 2),
    ContactKind("branch", "inbound", "pos", "Meeting with personal banker",
                "Reviewed retirement savings; booked a follow-up with an investment advisor.", "completed",
                (1200, 2700), 1),
    ContactKind("branch", "inbound", "pos", "Notary service", "Used the free notary service for a car title.",
                "completed", (300, 900), 1),
    ContactKind("pos", "inbound", "pos", "Card payment at point of sale",
                "Contactless debit card payment of $58.13 at a pharmacy terminal.", "approved", (5, 30), 3),
    ContactKind("pos", "inbound", "pos", "Card declined at merchant",
                "Debit card declined at a grocery store terminal: daily limit reached.", "declined",
                (5, 30), 1),
)  # fmt: skip

_FORBIDDEN = ("\t", "\n", "\r", "\\", '"')


def check_pools() -> None:
    """Fail fast if a pool string would need escaping in COPY text or JSON."""
    strings: list[str] = [c.name for c in CITIES] + list(STREETS) + list(BUSINESS_WORDS)
    for pool in NAME_POOLS:
        strings += [*pool.female, *pool.male, *pool.family]
    for kind in CONTACT_KINDS:
        strings += [kind.subject, kind.notes, kind.disposition, kind.campaign]
    for name, _ in BUSINESSES:
        strings.append(name)
    bad = [s for s in strings if any(ch in s for ch in _FORBIDDEN)]
    if bad:
        raise ValueError(f"pool strings must not contain tabs, newlines, backslashes or quotes: {bad}")


def ensure_sources_and_products() -> dict[str, SourceSystem]:
    """The sample source systems and products, created through the services where
    missing (an earlier seed_demo or seed_bulk run may have made some); returns
    every source system by code, the CRM's own included."""
    from crm import services  # noqa: PLC0415  (keeps this module of plain data importable anywhere)
    from crm.models import Product, SourceSystem  # noqa: PLC0415

    sources = {s.code: s for s in SourceSystem.objects.all()}
    for code, name, kind in SOURCE_SYSTEMS:
        if code not in sources:
            sources[code] = services.source_system_create(code=code, name=name, kind=kind)
    sources.setdefault("crm", services.crm_source())
    known = set(Product.objects.values_list("code", flat=True))
    for spec in PRODUCTS:
        if spec.code not in known:
            product = Product(
                code=spec.code, name=spec.name, category=spec.category, description=spec.description
            )
            product.full_clean()
            product.save()
    return sources


# --- How each touchpoint system's fields map onto ours -----------------------------------
# Each system calls things by its own names and codes; these are the field
# mappings an administrator would set up for it (admin, Source systems), so the
# demo shows results arriving from every one. (record kind, source field, target,
# transform, transform args, required). A "constant" is a map with a default on a
# column the system always sends.


@dataclass(frozen=True)
class MappingSpec:
    kind: str
    field: str
    target: str
    transform: str = "text"
    args: dict[str, Any] = dataclass_field(default_factory=dict)
    required: bool = False


def _always(value: str, **known: str) -> dict[str, Any]:
    return {"values": known or {value: value}, "default": value}


IVR_EXIT_CODES = {"SS": "self_served", "XFER": "transferred", "ABND": "abandoned", "HUP": "abandoned",
                  "TMO": "abandoned"}  # fmt: skip
IVR_INTENTS = {"BAL": "Balance inquiry", "ACT": "Card activation", "DUE": "Payment due date",
               "LOST": "Lost or stolen card", "MAIN": "Main menu"}  # fmt: skip
DIALER_RESULTS = {"NA": "no_answer", "VM": "voicemail", "INT": "interested", "NI": "not_interested",
                  "CB": "callback_requested", "PTP": "promise_to_pay", "WC": "completed"}  # fmt: skip
BILLING_PRODUCTS = {"CHK01": "everyday-checking", "CHK02": "premier-checking", "BCK01": "business-checking",
                    "SAV01": "high-yield-savings", "CC01": "cash-back-card", "CC02": "travel-rewards-card",
                    "MTG30": "mortgage-30-fixed", "AUTO": "auto-loan", "PLN": "personal-loan"}  # fmt: skip

SAMPLE_MAPPINGS: dict[str, tuple[MappingSpec, ...]] = {
    # Online banking: profile edits and consents the customer makes there, and visits.
    "web": (
        MappingSpec("customer", "visitor_id", "customer.external_key", required=True),
        MappingSpec("customer", "first_name", "customer.given_name"),
        MappingSpec("customer", "last_name", "customer.family_name"),
        MappingSpec("customer", "email", "customer.email", "email"),
        MappingSpec("customer", "mobile", "customer.phone", "phone_e164", {"region": "US"}),
        MappingSpec("customer", "street", "address.line1"),
        MappingSpec("customer", "city", "address.city"),
        MappingSpec("customer", "state", "address.region", "upper"),
        MappingSpec("customer", "zip", "address.postal_code"),
        MappingSpec("customer", "country", "address.country", "upper"),
        MappingSpec("customer", "paperless_marketing", "customer.marketing_opt_in", "boolean"),
        MappingSpec("interaction", "visitor_id", "customer.external_key", required=True),
        MappingSpec("interaction", "session_id", "interaction.external_id", required=True),
        MappingSpec("interaction", "started_at", "interaction.occurred_at", "datetime", required=True),
        MappingSpec("interaction", "event_type", "interaction.channel", "map",
                    {"values": {"page_view": "web", "secure_message": "web", "chat": "chat"}}, required=True),
        MappingSpec("interaction", "event_type", "interaction.direction", "map", _always("inbound")),
        MappingSpec("interaction", "page_title", "interaction.subject"),
        MappingSpec("interaction", "outcome", "interaction.disposition", "lower"),
        MappingSpec("interaction", "seconds_on_site", "interaction.duration_seconds", "integer"),
    ),
    # The e-mail platform: what happened to each message, and unsubscribes and complaints.
    "email": (
        MappingSpec("interaction", "recipient", "customer.email", "email", required=True),
        MappingSpec("interaction", "message_id", "interaction.external_id", required=True),
        MappingSpec("interaction", "event_time", "interaction.occurred_at", "datetime", required=True),
        MappingSpec("interaction", "event", "interaction.channel", "map", _always("email")),
        MappingSpec("interaction", "event", "interaction.direction", "map",
                    {"values": {"reply": "inbound"}, "default": "outbound"}),
        MappingSpec("interaction", "event", "interaction.disposition", "map",
                    {"values": {"delivered": "delivered", "open": "opened", "click": "clicked",
                                "bounce": "bounced", "reply": "replied"}, "default": "delivered"}),
        MappingSpec("interaction", "campaign_id", "interaction.campaign_code", "upper"),
        MappingSpec("interaction", "subject", "interaction.subject"),
        MappingSpec("customer", "recipient", "customer.email", "email", required=True),
        MappingSpec("customer", "unsubscribed", "customer.marketing_opt_in", "map",
                    {"values": {"true": False, "false": True}}),
        MappingSpec("customer", "spam_complaint", "customer.do_not_email", "boolean"),
    ),
    # The IVR: one row per call, its own exit codes mapped onto our dispositions.
    "ivr": (
        MappingSpec("interaction", "call_id", "interaction.external_id", required=True),
        MappingSpec("interaction", "ani", "customer.phone", "phone_e164", {"region": "US"}, required=True),
        MappingSpec("interaction", "customer_no", "customer.external_key"),
        MappingSpec("interaction", "call_start", "interaction.occurred_at", "datetime", required=True),
        MappingSpec("interaction", "call_type", "interaction.channel", "map", _always("ivr", IN="ivr")),
        MappingSpec("interaction", "call_type", "interaction.direction", "map",
                    _always("inbound", IN="inbound")),
        MappingSpec("interaction", "exit_code", "interaction.disposition", "map",
                    {"values": IVR_EXIT_CODES, "default": "abandoned"}),
        MappingSpec("interaction", "intent", "interaction.subject", "map",
                    {"values": IVR_INTENTS, "default": "IVR call"}),
        MappingSpec("interaction", "menu_path", "interaction.notes"),
        MappingSpec("interaction", "duration", "interaction.duration_seconds", "integer"),
    ),
    # The outbound dialer: attempts with its result codes, and do-not-call requests.
    "dialer": (
        MappingSpec("interaction", "attempt_id", "interaction.external_id", required=True),
        MappingSpec("interaction", "lead_id", "customer.external_key"),
        MappingSpec("interaction", "phone_dialed", "customer.phone", "phone_e164", {"region": "US"},
                    required=True),
        MappingSpec("interaction", "dialed_at", "interaction.occurred_at", "datetime", required=True),
        MappingSpec("interaction", "media", "interaction.channel", "map",
                    {"values": {"VOICE": "phone", "SMS": "sms"}}, required=True),
        MappingSpec("interaction", "call_direction", "interaction.direction", "map",
                    {"values": {"O": "outbound", "I": "inbound"}}, required=True),
        MappingSpec("interaction", "result_code", "interaction.disposition", "map",
                    {"values": DIALER_RESULTS}),
        MappingSpec("interaction", "campaign", "interaction.campaign_code", "upper"),
        MappingSpec("interaction", "talk_time", "interaction.duration_seconds", "integer"),
        MappingSpec("customer", "lead_id", "customer.external_key", required=True),
        MappingSpec("customer", "phone_dialed", "customer.phone", "phone_e164", {"region": "US"}),
        MappingSpec("customer", "dnc_requested", "customer.do_not_call", "boolean", required=True),
    ),
    # The direct-mail house: pieces mailed and their responses, and change-of-address updates.
    "direct_mail": (
        MappingSpec("interaction", "piece_id", "interaction.external_id", required=True),
        MappingSpec("interaction", "customer_no", "customer.external_key", required=True),
        MappingSpec("interaction", "mail_date", "interaction.occurred_at", "datetime", required=True),
        MappingSpec("interaction", "format", "interaction.channel", "map", _always("mail")),
        MappingSpec("interaction", "format", "interaction.direction", "map", _always("outbound")),
        MappingSpec("interaction", "format", "interaction.subject", "map",
                    {"values": {"LTR": "Offer letter", "PC": "Postcard", "CAT": "Catalog"},
                     "default": "Mail"}),
        MappingSpec("interaction", "status", "interaction.disposition", "map",
                    {"values": {"M": "mailed", "R": "returned", "RESP": "responded"}}),
        MappingSpec("interaction", "campaign", "interaction.campaign_code", "upper"),
        MappingSpec("customer", "customer_no", "customer.external_key", required=True),
        MappingSpec("customer", "new_address1", "address.line1", required=True),
        MappingSpec("customer", "new_city", "address.city"),
        MappingSpec("customer", "new_state", "address.region", "upper"),
        MappingSpec("customer", "new_zip", "address.postal_code"),
    ),
    # Branch and point of sale: card purchases.
    "pos": (
        MappingSpec("purchase", "card_holder_id", "customer.external_key", required=True),
        MappingSpec("purchase", "amount", "purchase.amount", "decimal", required=True),
        MappingSpec("purchase", "currency", "purchase.currency", "upper"),
        MappingSpec("purchase", "item", "purchase.product"),
    ),
    # Billing: accounts opened, changed and closed, with its own product and status
    # codes; deposits and withdrawals as business events.
    "billing": (
        MappingSpec("account", "cust_id", "customer.external_key", required=True),
        MappingSpec("account", "first_name", "customer.given_name"),
        MappingSpec("account", "last_name", "customer.family_name"),
        MappingSpec("account", "acct_no", "account.number", "upper", required=True),
        MappingSpec("account", "product_code", "account.product", "map", {"values": BILLING_PRODUCTS},
                    required=True),
        MappingSpec("account", "status", "account.status", "map",
                    {"values": {"A": "open", "D": "dormant", "C": "closed"}}, required=True),
        MappingSpec("account", "open_date", "account.opened_on", "date", {"format": "%m/%d/%Y"}),
        MappingSpec("account", "close_date", "account.closed_on", "date", {"format": "%m/%d/%Y"}),
        MappingSpec("account", "balance", "account.balance", "decimal"),
        MappingSpec("account", "ccy", "account.currency", "upper"),
        MappingSpec("event", "cust_id", "customer.external_key", required=True),
        MappingSpec("event", "txn_type", "event.type", "map",
                    {"values": {"DEP": "account.deposit", "WD": "account.withdrawal"}}, required=True),
        MappingSpec("event", "amount", "event.amount", "decimal", required=True),
        MappingSpec("event", "acct_no", "event.account_number", "upper"),
    ),
}  # fmt: skip


def ensure_sample_mappings(sources: dict[str, SourceSystem]) -> int:
    """Add the sample field mappings each demo source lacks (one per source, kind
    and target; mappings an administrator changed are left as they are); return
    how many were added. Each is checked as the admin checks it, then inserted at once."""
    from crm.models import FieldMapping  # noqa: PLC0415

    have = set(FieldMapping.objects.values_list("source_system_id", "record_kind", "target"))
    new = []
    for code, specs in SAMPLE_MAPPINGS.items():
        source = sources.get(code)
        if source is None:
            continue
        for position, spec in enumerate(specs):
            if (source.pk, spec.kind, spec.target) in have:
                continue
            mapping = FieldMapping(
                source_system=source, record_kind=spec.kind, source_field=spec.field, target=spec.target,
                transform=spec.transform, transform_args=spec.args, required=spec.required, position=position,
            )  # fmt: skip
            mapping.full_clean()
            new.append(mapping)
    FieldMapping.objects.bulk_create(new)
    return len(new)
