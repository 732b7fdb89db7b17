"""English case text for `engine.routing.case_sim`: one tuple of paraphrases per slot.

Every table has the same keys as `engine.routing.phrases.de`. A tuple's order matters: the
simulator's `default` configuration favours the first paraphrases, `shifted` the last, so a
model trained on one sees mostly other wordings in the other. Placeholders in braces are
filled by the simulator (see `engine.routing.case_sim.facts`).
"""

SUBJECT = {
    "hardware_config": (
        "Custom configuration for order {order}",
        "RAID {raid} setup needed on {product}",
        "Build-to-order request: {qty}x {sku}",
        "Pre-configuration of {product} before shipping",
        "Specific CPU and memory config ({ram} GB) for {sku}",
    ),
    "installation": (
        "Onsite installation for order {order}",
        "Technician needed in {site} for {product}",
        "Rack mounting and setup at our {site} office",
        "Installation appointment for {qty} units",
        "Can someone install the {product} on site?",
    ),
    "payment_terms": (
        "Payment terms for order {order}",
        "Request for net {days} payment",
        "Invoice instead of prepayment for {amount}",
        "Installment plan for our purchase of {qty}x {sku}",
        "PO and billing question, order {order}",
    ),
    "service_agreement": (
        "Service agreement for {product}",
        "{hours}h response SLA for order {order}",
        "Extended warranty of {years} years",
        "Maintenance contract for {qty} devices",
        "Support plan options for {sku}",
    ),
    "volume_discount": (
        "Volume pricing for {qty}x {sku}",
        "Bulk discount request, order {order}",
        "Quote for a large order of {product}",
        "Better unit price if we take {qty}?",
        "Framework agreement and tiered pricing",
    ),
    "delivery_exception": (
        "Delivery problem with order {order}",
        "Shipment {tracking} is late",
        "Parcel arrived damaged",
        "Wrong delivery address on {order}",
        "Only part of order {order} delivered",
    ),
    "returns_rma": (
        "Return request for {sku}",
        "RMA for defective {product}",
        "Unit dead on arrival, order {order}",
        "Refund or replacement for {qty}x {sku}",
        "How do I send back the {product}?",
    ),
    "fraud_review": (
        "Order {order} held for review",
        "Risk review: billing and shipping mismatch",
        "Verify customer identity for {order}",
        "Suspicious order of {qty}x {sku}",
        "Why is my order {order} on hold?",
    ),
}

GENERIC_SUBJECT = (
    "Question about order {order}",
    "Re: your offer",
    "Order {order}",
    "Request",
    "Follow-up",
)

CORE = {
    "hardware_config": (
        (
            "we need the servers configured with RAID {raid} before they ship",
            "please set up RAID {raid} on all drives prior to dispatch",
            "could you preconfigure the disk array as RAID {raid}",
            "the storage must come with a RAID {raid} volume already built",
        ),
        (
            "each unit should have {ram} GB of memory and two CPUs",
            "we require {ram} GB RAM per node and the faster processor option",
            "please fit {ram} GB of memory instead of the standard amount",
            "the build needs to be upgraded to {ram} GB memory",
        ),
        (
            "also install our OS image and set the BIOS to UEFI",
            "the BIOS settings and firmware have to match our standard build",
            "please load our operating system image during assembly",
            "we will send a config sheet with hostnames and iDRAC settings",
        ),
    ),
    "installation": (
        (
            "we need a technician to install the equipment at our {site} site",
            "please send an engineer to do the installation onsite in {site}",
            "can you arrange onsite installation at our {site} data center",
            "we would like your team to set everything up at our premises in {site}",
        ),
        (
            "this includes rack mounting, cabling and a first power-on test",
            "the job covers mounting in the rack and connecting the network",
            "racking, cabling and commissioning should all be part of it",
            "the engineer should mount the units and run the initial setup",
        ),
        (
            "the site is accessible from {date}, please propose an appointment",
            "our facility team needs the technician's name for site access",
            "which installation dates are available in the week of {date}",
            "please confirm the installation slot so we can book the loading dock",
        ),
    ),
    "payment_terms": (
        (
            "we would like to pay on net {days} terms instead of prepayment",
            "our finance department requires payment terms of {days} days",
            "can we get {days} days to pay the invoice",
            "we cannot prepay, please allow payment {days} days after invoice",
        ),
        (
            "a purchase order will follow, please invoice against the PO number",
            "could we split the amount of {amount} into three installments",
            "is it possible to pay by bank transfer after delivery",
            "we need a proforma invoice for {amount} for internal approval",
        ),
        (
            "our credit limit with you may need to be raised for this order",
            "please confirm the terms in writing before we release the order",
            "the invoice must show our VAT ID and cost center",
            "we usually pay by letter of credit for orders of this size",
        ),
    ),
    "service_agreement": (
        (
            "we need a service agreement with {hours}h onsite response",
            "please quote a support contract with a {hours} hour response time",
            "we are looking for an SLA covering next business day replacement",
            "the equipment needs {hours}h support around the clock",
        ),
        (
            "the coverage should run for {years} years from installation",
            "we want to extend the warranty to {years} years",
            "please include {years} years of maintenance and spare parts",
            "the contract term should be {years} years with yearly billing",
        ),
        (
            "a named support contact and quarterly reviews would be required",
            "our auditors need the SLA terms and escalation path in writing",
            "please include preventive maintenance visits in the offer",
            "can the agreement also cover the devices we bought last year",
        ),
    ),
    "volume_discount": (
        (
            "we plan to order {qty} units and ask for a volume discount",
            "what price per unit can you offer for {qty} pieces",
            "for a quantity of {qty} we expect a better price",
            "we would buy {qty} if you can give us a bulk rate",
        ),
        (
            "a competitor offered us {pct}% off the list price",
            "we are hoping for around {pct}% discount on the total",
            "please send a quote with tiered pricing for larger quantities",
            "our budget is {amount} for the whole rollout",
        ),
        (
            "we could sign a framework agreement for the next two years",
            "further call-off orders would follow every quarter",
            "the price should stay fixed for all deliveries this year",
            "please tell us the minimum order quantity for the discount",
        ),
    ),
    "delivery_exception": (
        (
            "the shipment was due on {date} but has not arrived",
            "our delivery is late and the tracking {tracking} has not moved",
            "the parcel is stuck in transit for several days",
            "the carrier says the package is delayed with no new date",
        ),
        (
            "two boxes arrived damaged and the content is broken",
            "only {qty} of the ordered units were delivered",
            "the goods were sent to the wrong address",
            "the pallet was refused at our dock because the paperwork was missing",
        ),
        (
            "please arrange a redelivery or a new shipment",
            "we need a new delivery date as soon as possible",
            "please open a claim with the carrier",
            "can you reroute the package to our {site} warehouse",
        ),
    ),
    "returns_rma": (
        (
            "the {product} is defective and we want to return it",
            "one unit was dead on arrival and does not power on",
            "we would like to send back {qty} units we do not need",
            "the device fails after a few minutes, please issue an RMA",
        ),
        (
            "please send us a return label and an RMA number",
            "how do we ship the faulty unit back to you",
            "we request a replacement unit under warranty",
            "we expect a refund of {amount} once the return is received",
        ),
        (
            "the serial number is on the attached photo",
            "we already ran the diagnostics, error code {rma}",
            "the original packaging is still available",
            "the return window has not expired yet",
        ),
    ),
    "fraud_review": (
        (
            "the risk engine flagged this order for review",
            "this order was put on hold by the fraud check",
            "billing and shipping addresses are in different countries",
            "the card was issued in {country} but the delivery goes elsewhere",
        ),
        (
            "the account was created today and the order value is {amount}",
            "several orders with different cards came from the same device",
            "the email domain looks disposable and the phone number is invalid",
            "the customer asked for express shipping to a forwarding address",
        ),
        (
            "please verify the customer's identity before release",
            "an analyst should call the customer and confirm the order",
            "decide whether to release or cancel the order",
            "our payment was declined twice, why is the order not shipped",
        ),
    ),
}

MENTION = {
    "hardware_config": (
        "the servers are the standard configuration",
        "the build is the same as last time",
    ),
    "installation": (
        "we will do the installation ourselves",
        "our own IT team handles the setup",
    ),
    "payment_terms": (
        "payment as usual by bank transfer",
        "the invoice goes to our accounts payable team",
    ),
    "service_agreement": (
        "the units are covered by our existing support contract",
        "warranty is the standard one",
    ),
    "volume_discount": (
        "we accept the quoted price",
        "pricing was agreed with your sales rep",
    ),
    "delivery_exception": (
        "delivery to the usual address please",
        "the last shipment arrived fine",
    ),
    "returns_rma": (
        "no returns from the previous order",
        "the old units will be recycled by us",
    ),
    "fraud_review": (
        "we have been your customer for years",
        "our account details are unchanged",
    ),
}

GREETING = ("Hello", "Hi team", "Dear Sir or Madam", "Good morning", "Hi", "")
CLOSING = (
    "Thanks, {name}",
    "Best regards, {name}",
    "Kind regards, {name} ({company})",
    "Thank you in advance",
    "Cheers, {name}",
    "",
)
FACTS = (
    "Order {order}: {qty} x {sku} ({product}), total {amount}.",
    "This is about order {order} ({qty} x {sku}, {amount}).",
    "Ref. {order} - {product}, qty {qty}, value {amount}.",
    "We ordered {qty} pcs of {sku} for {amount}.",
)
URGENCY = {
    "urgent": (
        "URGENT: production is down until this is solved",
        "this blocks our go-live tomorrow, please act immediately",
        "critical - please call me today",
    ),
    "high": (
        "we need this sorted out by {date}",
        "please treat this with priority",
        "our project deadline is next week",
    ),
    "normal": ("please get back to us when you can", "let us know the next steps"),
    "low": ("no rush on this one", "whenever convenient", "just for planning purposes"),
}
PRODUCTS = {
    "server": ("2U rack server", "1U compute node", "GPU server"),
    "storage": ("storage array", "NAS appliance", "disk shelf"),
    "network": ("48-port switch", "firewall appliance", "wireless controller"),
    "client": ("business laptop", "workstation", "docking station"),
}
